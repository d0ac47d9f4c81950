"""Normalization arithmetic and the statistics it reads, shared by data, model and inference.

Imports nothing of the project (numpy always; TensorFlow only for the `_tf` functions and for
URL paths), so the model and a robot-side `Policy` normalize exactly as the input pipeline does.
Normalize actions and proprio with dataset statistics; TensorFlow and numpy twins.

Both kinds are one affine map per dimension, ``y = (x - offset) / scale``, with offset and scale
computed once in float32 numpy by `_affine`, so the tf ops (training, inside `tf.data`) and the
numpy ops (inference, no TensorFlow needed) do the same float arithmetic:

* NORMAL: offset = mean, scale = max(std, EPS): a constant dimension maps to 0 instead of
  exploding.
* BOUNDS: offset = (p01 + p99) / 2, scale = max((p99 - p01) / 2, EPS), then clipped to
  [-1, 1]; so p01 -> -1 and p99 -> 1, and a constant dimension maps to 0.
* NONE: identity.

Unnormalizing inverts the affine map without clipping, so a policy output slightly outside
[-1, 1] maps slightly outside [p01, p99]. `mask` (one bool per dimension, e.g. False for a
gripper) leaves False dimensions exactly unchanged both ways.

`ArrayStatistics` / `DatasetStatistics` are the per-dimension statistics (computed in one
streamed pass by `octo_like.data.statistics`); their JSON form is what checkpoints store.
Statistics read from JSON or a dict (a cache file, a checkpoint, another process) are refused
when a value is non-finite or beyond ±`VALUE_LIMIT`, naming the key, field and dimension: an
inf std normalizes every value of its dimension to 0, an inf mean to -inf.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

_FIELDS = ("mean", "std", "min", "max", "p01", "p99")

VALUE_LIMIT = 2.0**64
"""Largest magnitude of a statistic, and of a value statistics are computed from: the square of a
larger number (~1.8e19) overflows float32 (max ~2**128), so a variance, a squared error or a
BOUNDS range computed from it in float32 is inf. Robot actions and states are O(1) in their
units; such a value is a logging error (a 3e38 written for "no reading"), not a measurement."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayStatistics:
    """Per-dimension statistics of one array key; every field is float32[D] (read-only)."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    p01: np.ndarray
    p99: np.ndarray

    def __post_init__(self):
        dims = set()
        for field in _FIELDS:
            value = np.array(getattr(self, field), dtype=np.float32)
            if value.ndim != 1:
                raise ValueError(f"statistics field {field!r} must be 1-D, got {value.shape}")
            value.setflags(write=False)
            object.__setattr__(self, field, value)
            dims.add(value.shape[0])
        if len(dims) != 1:
            raise ValueError(f"statistics fields have different lengths: {sorted(dims)}")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def problems(self) -> list[str]:
        """``"std dim 1 is inf"`` for every value that is non-finite or beyond ±VALUE_LIMIT."""
        found = []
        for field in _FIELDS:
            values = getattr(self, field).astype(np.float64)
            bad = ~np.isfinite(values) | (np.abs(values) > VALUE_LIMIT)
            found += [f"{field} dim {int(d)} is {values[d]:.6g}" for d in np.flatnonzero(bad)]
        return found

    def check(self, where: str) -> None:
        """Raises ValueError naming `where` (dataset and key) and every bad value."""
        found = self.problems()
        if found:
            raise ValueError(
                f"{where}: {', '.join(found[:8])}{' ...' if len(found) > 8 else ''} (non-finite "
                f"or beyond +-{VALUE_LIMIT:.3g}, whose square overflows float32): these "
                "statistics would normalize the dimension to 0, inf or nan; recompute them from "
                "data without the absurd values (computing them names the episode holding one)"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayStatistics):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in _FIELDS)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists; float32 -> Python float -> JSON -> float32 is exact."""
        return {field: getattr(self, field).tolist() for field in _FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "array statistics") -> ArrayStatistics:
        """The statistics of `d`, checked (`check`): `where` names them in errors."""
        missing = [f for f in _FIELDS if f not in d]
        if missing:
            raise ValueError(f"{where} lack fields {missing} (have {sorted(d)})")
        stats = cls(**{f: d[f] for f in _FIELDS})
        stats.check(where)
        return stats


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetStatistics:
    """What normalization needs from one dataset; `proprio` is None when it has none (P == 0)."""

    action: ArrayStatistics
    proprio: ArrayStatistics | None
    num_transitions: int
    num_trajectories: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetStatistics):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.to_dict(),
            "proprio": None if self.proprio is None else self.proprio.to_dict(),
            "num_transitions": int(self.num_transitions),
            "num_trajectories": int(self.num_trajectories),
        }

    def check(self, dataset: str) -> None:
        """Raises ValueError naming `dataset`, the key, field and dimension of every value that
        is non-finite or beyond ±VALUE_LIMIT."""
        for key, stats in (("action", self.action), ("proprio", self.proprio)):
            if stats is not None:
                stats.check(f"statistics of dataset {dataset!r}, {key!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], dataset: str = "") -> DatasetStatistics:
        """The statistics of `d`, checked (`check`); `dataset` names them in errors."""
        missing = [
            k for k in ("action", "proprio", "num_transitions", "num_trajectories") if k not in d
        ]
        if missing:
            raise ValueError(f"dataset statistics lack keys {missing} (have {sorted(d)})")
        label = f"statistics of dataset {dataset!r}" if dataset else "dataset statistics"
        proprio = d["proprio"]
        if proprio is not None:
            proprio = ArrayStatistics.from_dict(proprio, f"{label}, 'proprio'")
        return cls(
            action=ArrayStatistics.from_dict(d["action"], f"{label}, 'action'"),
            proprio=proprio,
            num_transitions=int(d["num_transitions"]),
            num_trajectories=int(d["num_trajectories"]),
        )

    def save_json(self, path: str) -> None:
        """Writes atomically (temporary file + rename); `path` may be a gs:// URL."""
        _write_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load_json(cls, path: str, dataset: str = "") -> DatasetStatistics:
        """Reads `save_json` output; local paths need no TensorFlow, URLs use tf.io.gfile."""
        try:
            if "://" in path:
                import tensorflow as tf

                with tf.io.gfile.GFile(path, "r") as f:
                    return cls.from_dict(json.loads(f.read()), dataset)
            with open(path) as f:
                return cls.from_dict(json.load(f), dataset)
        except Exception as e:  # missing, unreadable, not JSON or wrong fields: one message
            raise ValueError(f"cannot read dataset statistics from {path}: {e}") from e


EPS = 1e-6
"""Floor of a NORMAL std and of a BOUNDS half-range (p99 - p01) / 2."""


class NormalizationType(enum.StrEnum):
    NORMAL = "normal"  # mean / std
    BOUNDS = "bounds"  # p01 / p99 -> [-1, 1], clipped
    NONE = "none"


def as_normalization_type(kind: NormalizationType | str) -> NormalizationType:
    try:
        return NormalizationType(kind)
    except ValueError:
        choices = [k.value for k in NormalizationType]
        raise ValueError(f"unknown normalization {kind!r}; choose one of {choices}") from None


def _affine(
    stats: ArrayStatistics, kind: NormalizationType, mask: Sequence[bool] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset float32[D], scale float32[D], mask bool[D]) of a NORMAL or BOUNDS map."""
    if not isinstance(stats, ArrayStatistics):
        raise TypeError(f"{kind.value} normalization needs ArrayStatistics, got {type(stats)}")
    if kind is NormalizationType.NORMAL:
        offset, scale = stats.mean, np.maximum(stats.std, np.float32(EPS))
    else:
        offset = (stats.p01 + stats.p99) / np.float32(2)
        scale = np.maximum((stats.p99 - stats.p01) / np.float32(2), np.float32(EPS))
    if mask is None:
        mask = np.ones(stats.dim, bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (stats.dim,) or mask.dtype != bool:
            raise ValueError(
                f"normalization mask must be {stats.dim} bools (one per dimension), "
                f"got {mask.dtype}{list(mask.shape)}: {mask.tolist()}"
            )
    return offset.astype(np.float32), scale.astype(np.float32), mask


def _check_dim(last_dim: int | None, dim: int | None) -> None:
    """`last_dim` (of the data) against the statistics' `dim`; None: not known yet."""
    if last_dim is not None and dim is not None and last_dim != dim:
        raise ValueError(f"array has {last_dim} dims in its last axis, statistics have {dim}")


def _np_input(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f" or x.ndim == 0:
        raise TypeError(f"expected a float array [..., D], got {x.dtype}{list(x.shape)}")
    return x


def _tf_input(x: Any) -> tf.Tensor:
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating or x.shape.rank == 0:
        raise TypeError(f"expected a float tensor [..., D], got {x.dtype.name}{x.shape}")
    return x


def normalize_np(
    x: np.ndarray,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> np.ndarray:
    """float[..., D] -> normalized, same dtype; the numpy twin of `normalize_tf`."""
    kind, x = as_normalization_type(kind), _np_input(x)
    if kind is NormalizationType.NONE:
        return x
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(x.shape[-1], stats.dim)
    y = (x - offset.astype(x.dtype)) / scale.astype(x.dtype)
    if kind is NormalizationType.BOUNDS:
        y = np.clip(y, x.dtype.type(-1), x.dtype.type(1))
    return np.where(mask, y, x)


def unnormalize_np(
    y: np.ndarray,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> np.ndarray:
    """Inverse of `normalize_np` (without clipping); the numpy twin of `unnormalize_tf`."""
    kind, y = as_normalization_type(kind), _np_input(y)
    if kind is NormalizationType.NONE:
        return y
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(y.shape[-1], stats.dim)
    return np.where(mask, y * scale.astype(y.dtype) + offset.astype(y.dtype), y)


def normalize_tf(
    x: tf.Tensor,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> tf.Tensor:
    """float[..., D] -> normalized, same dtype; graph-mode safe (statistics become constants)."""
    import tensorflow as tf

    kind, x = as_normalization_type(kind), _tf_input(x)
    if kind is NormalizationType.NONE:
        return x
    offset, scale, mask = _affine(stats, kind, mask)
    return normalize_affine_tf(x, tf.constant(offset), tf.constant(scale), tf.constant(mask), kind)


def affine_map(
    stats: ArrayStatistics, kind: NormalizationType | str, mask: Sequence[bool] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(offset float32[D], scale float32[D], mask bool[D]) of `kind` over `stats` (None for
    NONE): the inputs of `normalize_affine_tf`, validated as `normalize_tf` validates them."""
    kind = as_normalization_type(kind)
    return None if kind is NormalizationType.NONE else _affine(stats, kind, mask)


def normalize_affine_tf(
    x: tf.Tensor,
    offset: tf.Tensor,
    scale: tf.Tensor,
    mask: tf.Tensor,
    kind: NormalizationType | str,
) -> tf.Tensor:
    """`normalize_tf` with the map's ``offset float32[D], scale float32[D], mask bool[D]`` as
    tensors (`affine_map`): one traced function then serves datasets whose statistics differ.
    A last dim other than D fails at trace time when known, else when run."""
    import tensorflow as tf

    kind, x = as_normalization_type(kind), _tf_input(x)
    dim = offset.shape[0]
    _check_dim(x.shape[-1], dim)
    x = tf.ensure_shape(x, x.shape[:-1].concatenate([dim]))
    y = (x - tf.cast(offset, x.dtype)) / tf.cast(scale, x.dtype)
    if kind is NormalizationType.BOUNDS:
        y = tf.clip_by_value(y, tf.constant(-1, x.dtype), tf.constant(1, x.dtype))
    return tf.where(mask, y, x)


def unnormalize_tf(
    y: tf.Tensor,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> tf.Tensor:
    """Inverse of `normalize_tf` (without clipping); graph-mode safe."""
    import tensorflow as tf

    kind, y = as_normalization_type(kind), _tf_input(y)
    if kind is NormalizationType.NONE:
        return y
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(y.shape[-1], stats.dim)
    y = tf.ensure_shape(y, y.shape[:-1].concatenate([stats.dim]))
    x = y * tf.constant(scale, y.dtype) + tf.constant(offset, y.dtype)
    return tf.where(tf.constant(mask), x, y)


def _write_atomic(path: str, text: str) -> None:
    """Writes `text` to a unique temporary file beside `path`, then renames it over `path`."""
    import tensorflow as tf

    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)

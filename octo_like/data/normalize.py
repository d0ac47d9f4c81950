"""Normalize actions and proprio with dataset statistics; TensorFlow and numpy twins.

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

Normalize raw standardized trajectories, before padding dimensions (`max_action_dim`), so the
statistics' D matches the data's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from octo_like.data import schema
from octo_like.data.statistics import ArrayStatistics, DatasetStatistics

if TYPE_CHECKING:
    import tensorflow as tf

EPS = 1e-6
"""Floor of a NORMAL std and of a BOUNDS half-range (p99 - p01) / 2."""


class NormalizationType(enum.StrEnum):
    NORMAL = "normal"  # mean / std
    BOUNDS = "bounds"  # p01 / p99 -> [-1, 1], clipped
    NONE = "none"


def _kind(kind: NormalizationType | str) -> NormalizationType:
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


def _check_dim(last_dim: int | None, stats: ArrayStatistics) -> None:
    if last_dim is not None and last_dim != stats.dim:
        raise ValueError(f"array has {last_dim} dims in its last axis, statistics have {stats.dim}")


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
    kind, x = _kind(kind), _np_input(x)
    if kind is NormalizationType.NONE:
        return x
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(x.shape[-1], stats)
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
    kind, y = _kind(kind), _np_input(y)
    if kind is NormalizationType.NONE:
        return y
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(y.shape[-1], stats)
    return np.where(mask, y * scale.astype(y.dtype) + offset.astype(y.dtype), y)


def normalize_tf(
    x: tf.Tensor,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> tf.Tensor:
    """float[..., D] -> normalized, same dtype; graph-mode safe (statistics become constants)."""
    import tensorflow as tf

    kind, x = _kind(kind), _tf_input(x)
    if kind is NormalizationType.NONE:
        return x
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(x.shape[-1], stats)
    x = tf.ensure_shape(x, x.shape[:-1].concatenate([stats.dim]))
    y = (x - tf.constant(offset, x.dtype)) / tf.constant(scale, x.dtype)
    if kind is NormalizationType.BOUNDS:
        y = tf.clip_by_value(y, tf.constant(-1, x.dtype), tf.constant(1, x.dtype))
    return tf.where(tf.constant(mask), y, x)


def unnormalize_tf(
    y: tf.Tensor,
    stats: ArrayStatistics | None,
    kind: NormalizationType | str,
    mask: Sequence[bool] | None = None,
) -> tf.Tensor:
    """Inverse of `normalize_tf` (without clipping); graph-mode safe."""
    import tensorflow as tf

    kind, y = _kind(kind), _tf_input(y)
    if kind is NormalizationType.NONE:
        return y
    offset, scale, mask = _affine(stats, kind, mask)
    _check_dim(y.shape[-1], stats)
    y = tf.ensure_shape(y, y.shape[:-1].concatenate([stats.dim]))
    x = y * tf.constant(scale, y.dtype) + tf.constant(offset, y.dtype)
    return tf.where(tf.constant(mask), x, y)


def normalize_trajectory(
    traj: dict,
    stats: DatasetStatistics,
    kind: NormalizationType | str,
    action_mask: Sequence[bool] | None = None,
    proprio_mask: Sequence[bool] | None = None,
) -> dict:
    """Normalizes ``action float32[T, A]`` and ``observation.proprio float32[T, P]`` (P > 0).

    Returns a new dict (the input is not modified); every other key passes through. For use in
    `tf.data.Dataset.map` on standardized trajectories.
    """
    import tensorflow as tf

    kind = _kind(kind)
    if schema.ACTION not in traj:
        raise KeyError(f"trajectory has no {schema.ACTION!r} key (found {sorted(traj)})")
    out = dict(traj)
    try:
        out[schema.ACTION] = normalize_tf(traj[schema.ACTION], stats.action, kind, action_mask)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing {schema.ACTION!r}: {e}") from e
    observation = traj.get("observation", {})
    if schema.PROPRIO not in observation:
        if stats.proprio is not None:
            raise KeyError(
                f"statistics have proprio (P={stats.proprio.dim}) but the trajectory has no "
                f"observation/{schema.PROPRIO}"
            )
        return out
    proprio = tf.convert_to_tensor(observation[schema.PROPRIO])
    proprio_dim = proprio.shape[-1] if proprio.shape.rank else None
    if proprio_dim == 0:
        return out
    if stats.proprio is None:
        raise ValueError(
            f"the trajectory has observation/{schema.PROPRIO} with {proprio_dim} dims but the "
            "statistics have none (computed on data without proprio?)"
        )
    try:
        normalized = normalize_tf(proprio, stats.proprio, kind, proprio_mask)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing observation/{schema.PROPRIO}: {e}") from e
    out["observation"] = {**observation, schema.PROPRIO: normalized}
    return out

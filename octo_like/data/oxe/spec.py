"""What the pipeline must know about one RLDS dataset: cameras, proprio, language, action layout.

A `DatasetSpec` is plain data (JSON-able through `to_dict` / `from_dict`), so a run's config and
its checkpoints can name datasets that are not in the built-in OXE registry: users register their
own robots from a config without editing library code.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from octo_like import schema


class ActionEncoding(enum.Enum):
    """The meaning of the dims of a standardized ``action float32[T, A]``."""

    EEF_POS = "eef_pos"  # 7: xyz delta, roll-pitch-yaw delta, gripper (1 = open, 0 = closed)
    JOINT_POS = "joint_pos"  # 8: 7 joint positions + gripper
    JOINT_POS_BIMANUAL = "joint_pos_bimanual"  # 14: 2 x (6 joint positions + gripper)
    EEF_R6 = "eef_r6"  # 10: xyz, 6D rotation, gripper
    CUSTOM = "custom"  # a new robot's own action space, any dimension (e.g. fine-tuning data)

    @property
    def action_dim(self) -> int | None:
        """The fixed action dimension of this encoding; None for CUSTOM (any)."""
        return _ACTION_DIMS.get(self)


_ACTION_DIMS = {
    ActionEncoding.EEF_POS: 7,
    ActionEncoding.JOINT_POS: 8,
    ActionEncoding.JOINT_POS_BIMANUAL: 14,
    ActionEncoding.EEF_R6: 10,
}


class UnknownNameError(KeyError, ValueError):
    """A registry lookup failed; the message lists the closest known names.

    Both a KeyError (it is a failed lookup) and a ValueError (it is a bad config value), so
    callers may catch either.
    """

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """`UnknownNameError` for `name`, suggesting close names among `known`."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if close:
        hint = f"did you mean {', '.join(repr(c) for c in close)}?"
    else:
        hint = f"known {kind}s: {', '.join(known[:30])}{' ...' if len(known) > 30 else ''}"
    return UnknownNameError(f"unknown {kind} {name!r}; {hint}")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Keys of one dataset, as the standardized trajectory holds them.

    `image_keys` maps canonical cameras (``primary``, ``secondary``, ``wrist``) to keys under
    ``steps/observation``; None marks a camera the dataset lacks (padded downstream).
    `proprio_key` is a key of the *standardized* ``traj["observation"]`` (the standardization
    function may create it, e.g. ``proprio``). `language_key` is a slash path inside the
    standardized trajectory (e.g. ``language_instruction`` or
    ``observation/natural_language_instruction``). `action_normalization_mask` marks the action
    dims to normalize (False for the gripper); None normalizes all. `standardize` names an entry
    of `octo_like.data.oxe.standardize.STANDARDIZERS`.
    """

    name: str
    image_keys: Mapping[str, str | None]
    proprio_key: str | None
    language_key: str | None = "language_instruction"
    action_encoding: ActionEncoding = ActionEncoding.EEF_POS
    action_normalization_mask: tuple[bool, ...] | None = None
    standardize: str = "identity"

    def __post_init__(self):
        where = f"dataset spec {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"dataset spec name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.image_keys, Mapping):
            raise TypeError(f"{where}: image_keys must be a mapping, got {self.image_keys!r}")
        for camera, key in self.image_keys.items():
            if not isinstance(camera, str) or not camera:
                raise ValueError(f"{where}: camera names must be non-empty strings: {camera!r}")
            if key is not None and (not isinstance(key, str) or not key):
                raise ValueError(f"{where}: image key of {camera!r} must be a string or None")
        for field in ("proprio_key", "language_key"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{where}: {field} must be a non-empty string or None: {value!r}")
        if not isinstance(self.action_encoding, ActionEncoding):
            raise TypeError(f"{where}: action_encoding must be an ActionEncoding")
        mask = self.action_normalization_mask
        if mask is not None:
            mask = tuple(mask)
            if not mask or not all(isinstance(m, bool) for m in mask):
                raise ValueError(f"{where}: action_normalization_mask must be a tuple of bools")
        if not isinstance(self.standardize, str) or not self.standardize:
            raise ValueError(f"{where}: standardize must name a standardization function")
        # Frozen and hashable-by-value inputs: callers may pass dicts and lists.
        object.__setattr__(self, "image_keys", types.MappingProxyType(dict(self.image_keys)))
        object.__setattr__(self, "action_normalization_mask", mask)

    def __hash__(self) -> int:  # the generated hash would fail on the mapping field
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self):  # mapping proxies cannot be pickled; specs travel as dicts
        return (type(self).from_dict, (self.to_dict(),))

    @property
    def cameras(self) -> tuple[str, ...]:
        """Canonical cameras this dataset actually provides."""
        return tuple(c for c, key in self.image_keys.items() if key is not None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; `from_dict` inverts it."""
        mask = self.action_normalization_mask
        return {
            "name": self.name,
            "image_keys": dict(self.image_keys),
            "proprio_key": self.proprio_key,
            "language_key": self.language_key,
            "action_encoding": self.action_encoding.value,
            "action_normalization_mask": None if mask is None else list(mask),
            "standardize": self.standardize,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """Builds a spec from `to_dict` output or a hand-written config entry."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"dataset spec {data.get('name')!r}: unknown field(s) {unknown}; "
                f"expected some of {sorted(fields)}"
            )
        missing = [f for f in ("name", "image_keys", "proprio_key") if f not in data]
        if missing:
            raise ValueError(f"dataset spec {data.get('name')!r}: missing field(s) {missing}")
        kwargs = dict(data)
        encoding = kwargs.get("action_encoding", ActionEncoding.EEF_POS)
        if not isinstance(encoding, ActionEncoding):
            try:
                encoding = ActionEncoding(encoding)
            except ValueError:
                choices = [e.value for e in ActionEncoding]
                raise ValueError(
                    f"dataset spec {data['name']!r}: unknown action_encoding {encoding!r}; "
                    f"expected one of {choices}"
                ) from None
        kwargs["action_encoding"] = encoding
        if kwargs.get("action_normalization_mask") is not None:
            kwargs["action_normalization_mask"] = tuple(kwargs["action_normalization_mask"])
        return cls(**kwargs)


SIMULATED_STATE_KEY = "state"  # where scripts/collect_demos.py stores the proprio


def simulated_dataset_spec(
    name: str, cameras: Sequence[str], action_encoding: ActionEncoding, action_dim: int
) -> DatasetSpec:
    """A simulated dataset as scripts/collect_demos.py writes it: camera ``c`` under ``image_<c>``,
    proprio under `SIMULATED_STATE_KEY`, the gripper (last action dim) left unnormalized.
    The registry's ``metaworld_<variant>`` entries and `octo_like.envs.variants` (whose spawned
    simulator workers must not import TensorFlow, so this lives here, not in the registry) both
    build their specs with it."""
    return DatasetSpec(
        name=name,
        image_keys={camera: schema.image_key(camera) for camera in cameras},
        proprio_key=SIMULATED_STATE_KEY,
        action_encoding=action_encoding,
        action_normalization_mask=(True,) * (action_dim - 1) + (False,),
        standardize="identity",
    )

"""Octo's own input and statistics formats, accepted beside octo_like's (see docs/octo.md).

Octo's dictionaries differ from octo_like's in three places: a tokenized instruction is
``tasks["language_instruction"] = {"input_ids", "attention_mask"}`` (octo_like: ``language_tokens``
/ ``language_mask`` beside the raw strings), goals are keyed by image key (``image_primary``;
octo_like's `create_tasks` also takes camera names), and a camera the observation leaves out is
skipped (octo_like fills it with a masked black frame: masked keys get exactly zero attention
weight, so every other token's output is the same as Octo's).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.normalization import ArrayStatistics


def _batch_window(observations: Mapping[str, Any]) -> tuple[int, int]:
    pad = observations.get("timestep_pad_mask")
    if pad is not None:
        return tuple(np.shape(pad)[:2])  # type: ignore[return-value]
    for key, value in observations.items():
        if key.startswith("image_") or key == "proprio":
            return tuple(np.shape(value)[:2])  # type: ignore[return-value]
    raise ValueError(
        "observations need timestep_pad_mask bool[b, w] or an image_* / proprio array to tell "
        f"the batch and window; got keys {sorted(observations)}"
    )


def native_observations(
    observations: Mapping[str, Any], image_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, Any]:
    """Octo-style observations with every camera of `image_shapes` ({image key: (h, w, c)})
    present: a missing one becomes uint8 zeros with a False pad mask (Octo skips its tokenizer;
    the masked tokens change no other output)."""
    if not isinstance(observations, Mapping):
        raise TypeError(f"observations must be a dict, got {type(observations).__name__}")
    given_pad_masks("observation", observations)
    missing = [k for k in image_shapes if k not in observations]
    if not missing:
        return dict(observations)
    batch, window = _batch_window(observations)
    out = dict(observations)
    pad = given_pad_masks("observation", out)
    for key in missing:
        if key in pad and np.asarray(pad[key]).any():
            raise ValueError(
                f"observations are missing {key!r} (uint8[b, w, "
                f"{', '.join(map(str, image_shapes[key]))}]) that pad_mask_dict marks present; "
                f"given keys: {sorted(observations)}"
            )
        out[key] = np.zeros((batch, window, *image_shapes[key]), np.uint8)
        pad[key] = np.zeros((batch, window), bool)
    if "pad_mask_dict" in observations:  # else fill_pad_masks adds the present ones (warned)
        for key in image_shapes:
            pad.setdefault(key, np.ones((batch, window), bool))
    out["pad_mask_dict"] = pad
    return out


def given_pad_masks(part: str, tree: Mapping[str, Any]) -> dict[str, Any]:
    """`tree`'s ``pad_mask_dict`` ({key: bool mask}; absent or None: {}), refused by name when
    it is another kind of container (a list of masks reads as truthy arrays otherwise)."""
    given = tree.get("pad_mask_dict")
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(
            f"{part} pad_mask_dict must be a dict {{key: bool mask}} of the {part} keys it "
            f"masks, got a {type(given).__name__}"
        )
    return dict(given)


def fill_pad_masks(
    part: str, tree: Mapping[str, Any], required: Mapping[str, set[str]]
) -> dict[str, Any]:
    """Octo's convention: a modality without a mask is valid. Adds the all-True masks the
    network reads but `tree` lacks (``pad_mask_dict`` entries: observation bool[b, w], task
    bool[b]; ``proprio_pad_mask`` bool[b, w, P]) and warns about the ``pad_mask_dict`` ones,
    since a missing mask usually means the caller forgot it."""
    tree = dict(tree)
    given = given_pad_masks(part, tree)
    arrays = [v for k, v in tree.items() if k != "pad_mask_dict" and np.ndim(v) > 0]
    if not arrays:
        return tree
    batch = np.shape(arrays[0])[0]
    if part == "observation":
        shape = (batch, *np.shape(tree.get("timestep_pad_mask", arrays[0]))[1:2])
        if "proprio_pad_mask" in required[part] and "proprio" in tree:
            tree.setdefault("proprio_pad_mask", np.ones(np.shape(tree["proprio"]), bool))
    else:
        shape = (batch,)
    prefix = "pad_mask_dict/"
    missing = sorted(
        p[len(prefix) :]
        for p in required[part]
        if p.startswith(prefix) and p[len(prefix) :] not in given
    )
    if not missing:
        return tree
    warnings.warn(
        f"{part} pad_mask_dict lacks {', '.join(missing)}: assuming they are valid",
        stacklevel=4,
    )
    tree["pad_mask_dict"] = {**given, **{k: np.ones(shape, bool) for k in missing}}
    return tree


def native_tasks(tasks: Mapping[str, Any]) -> dict[str, Any]:
    """Tasks with Octo's tokenized ``language_instruction`` {input_ids, attention_mask} turned
    into ``language_tokens`` int32[b, L] / ``language_mask`` bool[b, L]."""
    if not isinstance(tasks, Mapping):
        raise TypeError(f"tasks must be a dict, got {type(tasks).__name__}")
    instruction = tasks.get("language_instruction")
    if not isinstance(instruction, Mapping):
        return dict(tasks)
    if "input_ids" not in instruction:
        raise ValueError(
            "tasks['language_instruction'] as a dict must hold Octo's tokenized form "
            f"{{'input_ids', 'attention_mask'}}; got keys {sorted(instruction)}"
        )
    ids = np.asarray(instruction["input_ids"], np.int32)
    mask = np.asarray(instruction.get("attention_mask", ids != 0), bool)
    out = {k: v for k, v in tasks.items() if k != "language_instruction"}
    out["language_tokens"], out["language_mask"] = ids, mask
    return out


def octo_statistics_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A statistics entry with Octo's keys added: ``entry["action"]`` = the action statistics
    with Octo's ``mask`` (True: normalized) and the entry's ``normalization`` (so Octo's call
    unnormalizes the way the model was trained), ``entry["proprio"]`` when present."""
    entry = dict(entry)
    statistics = entry.get("statistics", {})
    if statistics.get("action") and "action" not in entry:
        action = dict(statistics["action"])
        mask = entry.get("action_normalization_mask")
        action["mask"] = list(mask) if mask is not None else [True] * len(action["mean"])
        action["normalization"] = entry.get("normalization", "normal")
        entry["action"] = action
    if statistics.get("proprio") and "proprio" not in entry:
        entry["proprio"] = dict(statistics["proprio"])
    return entry


OCTO_FLAT_KEYS = ("action", "proprio", "num_transitions", "num_trajectories")
"""What Octo's statistics hold at the top level for a model trained on one dataset."""


class StatisticsByDataset(dict):
    """``{dataset name: entry}`` (a plain dict to everything that iterates, saves or compares
    it) that also answers Octo's flat keys for a model trained on one dataset.

    Octo stores a one-dataset model's statistics flat, ``model.dataset_statistics["action"]``;
    here they are keyed by name, ``model.dataset_statistics[NAME]["action"]``. Both work: a key
    of `OCTO_FLAT_KEYS` that names no dataset resolves to that key of the only dataset's entry
    (``num_transitions`` / ``num_trajectories`` from its statistics). With several datasets, or
    a dataset named like one of those keys, a flat key is a KeyError naming the datasets to
    choose from. `in` and `get` agree with ``[]``; iteration, `len` and `keys` list datasets.
    """

    def __missing__(self, key):
        if key in OCTO_FLAT_KEYS:
            entry = self.only_entry(key)
            if key in entry:
                return entry[key]
            value = entry.get("statistics", {}).get(key)
            if value is not None:
                return value
            raise KeyError(f"{key!r}: the dataset {next(iter(self))!r} has no {key} statistics")
        names = ", ".join(map(repr, sorted(self))) or "none"
        raise KeyError(f"{key!r} is not a dataset of this model (datasets: {names})")

    def only_entry(self, flat_key: str = "a flat key") -> dict[str, Any]:
        """The entry of the model's one dataset; a KeyError naming the datasets otherwise."""
        names = ", ".join(map(repr, sorted(self)))
        if not self:
            raise KeyError(f"{flat_key!r}: this model has no dataset statistics")
        if len(self) > 1:
            raise KeyError(
                f"{flat_key!r}: this model was trained on several datasets ({names}); "
                f"choose one: dataset_statistics[NAME][{flat_key!r}]"
            )
        if any(name in OCTO_FLAT_KEYS for name in self):
            raise KeyError(
                f"{flat_key!r}: the dataset is named {names}, like a flat key; "
                f"use dataset_statistics[NAME][{flat_key!r}]"
            )
        return next(iter(self.values()))

    def __contains__(self, key) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


def without_views(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as checkpoints store it: `octo_statistics_view`'s copies dropped."""
    return {k: v for k, v in entry.items() if k not in ("action", "proprio")}


def bare_unnormalize(
    actions: np.ndarray, statistics: Mapping[str, Any], normalization_type: str
) -> np.ndarray:
    """Octo's unnormalization from bare action statistics: dims past ``len(mask)`` dropped,
    masked-False dims (e.g. the gripper) left as predicted; "normal": ``x * std + mean``,
    "bounds": ``(x + 1) / 2 * (p99 - p01) + p01``."""
    stats = ArrayStatistics.from_dict(statistics)
    mask = np.asarray(statistics.get("mask", np.ones(stats.dim, bool)), bool)
    actions = np.asarray(actions)[..., : mask.shape[0]]
    kind = str(getattr(normalization_type, "value", normalization_type)).lower()
    if kind == "none":
        return actions.astype(np.float32)
    if kind == "normal":
        restored = actions * stats.std + stats.mean
    elif kind == "bounds":
        restored = (actions + 1) / 2 * (stats.p99 - stats.p01) + stats.p01
    else:
        raise ValueError(f"normalization_type must be 'normal', 'bounds' or 'none', got {kind!r}")
    return np.where(mask, restored, actions).astype(np.float32)

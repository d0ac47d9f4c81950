"""The input spec: shapes and dtypes (batch axis removed) of the observations and tasks a model
was built for. Saved in checkpoints; every call checks its inputs against it, so a mismatched
observation fails with the key and the expected shape instead of an XLA shape error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.schema import describe_keys

# Keys that only bookkeeping uses; they never reach the network.
_IGNORED = {"language_instruction", "dataset_name", "timestep"}

InputSpec = dict[str, Any]  # {"observation": {key: {"shape": [...], "dtype": str}}, "task": ...}


def _leaves(tree: Mapping, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, path + "/")
        else:
            yield path, value


def spec_from_batch(batch: Mapping[str, Any]) -> InputSpec:
    """{observation, task} leaf shapes without the batch axis, from an example batch (arrays or
    `jax.ShapeDtypeStruct`s)."""
    spec: InputSpec = {}
    for part in ("observation", "task"):
        entries = {}
        for path, value in _leaves(batch.get(part, {})):
            if path.split("/")[-1] in _IGNORED:
                continue
            if hasattr(value, "shape") and hasattr(value, "dtype"):  # arrays, ShapeDtypeStructs
                shape, dtype = tuple(value.shape), np.dtype(value.dtype)
            else:
                array = np.asarray(value)
                shape, dtype = array.shape, array.dtype
            if dtype.kind == "O":
                continue
            entries[path] = {"shape": list(shape[1:]), "dtype": str(dtype)}
        spec[part] = entries
    return spec


def check_inputs(
    spec: InputSpec,
    part: str,
    tree: Mapping[str, Any],
    required: set[str] | None = None,
    batch_dims: int = 1,
    free_window: int | None = None,
):
    """Raises ValueError naming the key and expected shape for a missing or mismatched input.

    `required`: the paths the network reads (others in the spec are informational).
    `free_window`: observations may hold any window from 1 to it (the spec's first axis after
    the batch), one window for all of them (Octo's calls pass a single frame to a model
    trained on two).
    """
    given = dict(_leaves(tree))
    if free_window is not None:
        spec, windows = _with_given_window(spec, part, given, required, batch_dims, free_window)
    for path, expected in spec.get(part, {}).items():
        if required is not None and path not in required:
            continue
        if path not in given:
            raise ValueError(
                f"{part} is missing {path!r} (expected shape [batch, "
                f"{', '.join(map(str, expected['shape']))}], dtype {expected['dtype']}); "
                f"given keys: {describe_keys(given)}"
            )
        shape = tuple(np.shape(given[path]))[batch_dims:]
        if list(shape) != list(expected["shape"]):
            raise ValueError(
                f"{part} {path!r} has shape {tuple(np.shape(given[path]))}, expected "
                f"[batch, {', '.join(map(str, expected['shape']))}]"
            )


def _with_given_window(spec, part, given, required, batch_dims, limit):
    """The spec with its window axis set to the inputs' (checked: one window, 1..limit)."""
    windows = {}
    for path, expected in spec.get(part, {}).items():
        if (required is None or path in required) and path in given and expected["shape"]:
            shape = tuple(np.shape(given[path]))
            if len(shape) > batch_dims:
                windows[path] = shape[batch_dims]
    values = set(windows.values())
    if len(values) > 1:
        raise ValueError(f"{part} inputs have different windows: {windows}")
    if not values:
        return spec, windows
    window = values.pop()
    if not 1 <= window <= limit:
        raise ValueError(f"{part} window {window} is outside 1..{limit} (the model's max_horizon)")
    entries = {
        path: {**e, "shape": [window, *e["shape"][1:]]} if path in windows else e
        for path, e in spec[part].items()
    }
    return {**spec, part: entries}, windows


def pretty(spec: InputSpec) -> str:
    """A readable table of the spec (used by `OctoModel.get_pretty_spec`)."""
    lines = []
    for part in ("observation", "task"):
        lines.append(f"{part}:")
        for path, entry in sorted(spec.get(part, {}).items()):
            shape = ", ".join(["b", *map(str, entry["shape"])])
            lines.append(f"  {path:<40} {entry['dtype']:<8} [{shape}]")
    return "\n".join(lines)

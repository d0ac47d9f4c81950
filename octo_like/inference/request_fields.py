"""The container type of each field of an observation or frame, checked where it enters.

A field of the wrong kind used to fail deep inside with numpy's words: ``pad_mask_dict`` sent as
a list gave "The truth value of an array ... is ambiguous" (or "dictionary update sequence
element #0 has length 1"). `check_field_types` names the field, what it must be and what it
got, before any shape is read. Shapes and dtypes are checked later, by their own checks.
Used by `Policy` (observations.py), the history of a session and the server's request checks,
so it imports neither JAX nor TensorFlow (the client side imports the history).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.schema import PAD_MASK_DICT, describe_keys

MASKS = "a map {key: bool mask} of the observation keys it masks"


def check_field_types(observation: Any, what: str = "observation") -> None:
    """Raises TypeError naming the field when `observation` is not a map, ``pad_mask_dict`` is
    not a map of arrays, or another field is not an array (a numpy array, a number, or a
    list that numpy stacks into one array: a map, a string, None or a ragged list is not)."""
    if not isinstance(observation, Mapping):
        raise TypeError(f"{what} must be a map of arrays, got {describe(observation)}")
    for key, value in observation.items():
        if key != PAD_MASK_DICT:
            check_array(value, f"{what} {key!r}")
            continue
        if not isinstance(value, Mapping):
            raise TypeError(f"{what} {PAD_MASK_DICT!r} must be {MASKS}, got {describe(value)}")
        for masked, mask in value.items():
            check_array(mask, f"{what} {PAD_MASK_DICT}[{masked!r}]")


def check_array(value: Any, where: str) -> None:
    """`value` is, or numpy stacks it into, one numeric/bool array; else TypeError naming it."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{where} must be a numeric or bool array, got an object array")
        return
    if isinstance(value, Mapping | str | bytes) or value is None:
        raise TypeError(f"{where} must be an array, got {describe(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nesting
        raise TypeError(
            f"{where} must be an array, got {describe(value)} that is not one array ({error})"
        ) from None
    if array.dtype == object or array.dtype.kind in "USV":
        raise TypeError(f"{where} must be a numeric or bool array, got {describe(value)}")


def describe(value: Any) -> str:
    """A short description of `value`'s type: 'list of 2 ndarray', 'dict with keys [...]'."""
    if isinstance(value, Mapping):
        return f"a map with keys {describe_keys(value)}"
    if isinstance(value, list | tuple):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {len(value)} ({', '.join(kinds) or 'nothing'})"
    if isinstance(value, str | bytes):
        return f"a {type(value).__name__} {value[:40]!r}"
    if isinstance(value, np.ndarray):
        return f"an array {value.dtype}{list(value.shape)}"
    return type(value).__name__

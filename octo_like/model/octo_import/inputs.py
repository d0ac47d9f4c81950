"""The converter's inputs checked before anything is built or written: each file of the Octo
and T5 directories parsed on its own, so a damaged one is named (its path and what is wrong)
instead of surfacing as a bare JSONDecodeError, "Unpack failed" or an orbax AttributeError;
and what would be written (parameters, statistics) checked to be finite and well-formed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.model.octo_import.config import OctoLayoutError

DAMAGED = "damaged or truncated? copy it again from the published checkpoint"


def read_json(path: str) -> dict[str, Any]:
    """A JSON object from `path`, or an `OctoLayoutError` naming the file."""
    try:
        with open(path, "rb") as file:
            value = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError as error:
        raise OctoLayoutError(f"{path}: missing") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OctoLayoutError(f"{path}: not valid JSON ({error}); {DAMAGED}") from error
    if not isinstance(value, dict):
        raise OctoLayoutError(f"{path}: holds a JSON {type(value).__name__}, expected an object")
    return value


def read_msgpack(path: str) -> dict[str, Any]:
    """A msgpack'd tree (flax serialization) from `path`, or an error naming the file."""
    from flax import serialization

    try:
        with open(path, "rb") as file:
            value = serialization.msgpack_restore(file.read())
    except FileNotFoundError as error:
        raise OctoLayoutError(f"{path}: missing") from error
    except Exception as error:  # noqa: BLE001 - msgpack raises many unrelated types
        raise OctoLayoutError(
            f"{path}: not a readable msgpack file ({type(error).__name__}: {error}); {DAMAGED}"
        ) from error
    if not isinstance(value, dict):
        raise OctoLayoutError(f"{path}: holds {type(value).__name__}, expected a tree")
    return value


def check_parameter_directory(path: str) -> None:
    """``<step>/default``: present, not empty, its orbax metadata files readable."""
    if not os.path.isdir(path):
        raise OctoLayoutError(f"{path}: missing (Octo keeps each step's parameters there)")
    names = os.listdir(path)
    if not names:
        raise OctoLayoutError(f"{path}: empty; {DAMAGED}")
    if "_METADATA" in names:
        read_json(os.path.join(path, "_METADATA"))
    if "checkpoint" in names and not any(n.endswith(".ocdbt") or n == "d" for n in names):
        read_msgpack(os.path.join(path, "checkpoint"))  # an aggregate file: the arrays inside


def check_t5_directory(t5_dir: str) -> None:
    """config.json parses and spiece.model loads (sentencepiece's own reader)."""
    read_json(os.path.join(t5_dir, "config.json"))
    path = os.path.join(t5_dir, "spiece.model")
    if not os.path.isfile(path):
        raise OctoLayoutError(f"{path}: missing (the T5 tokenizer)")
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    with open(path, "rb") as file:
        proto = file.read()
    try:
        processor.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as error:
        raise OctoLayoutError(f"{path}: not a sentencepiece model ({error}); {DAMAGED}") from error


def check_finite_parameters(mapped: Mapping[str, np.ndarray]) -> None:
    """Refuses NaN or Inf in any parameter about to be written, naming each array."""
    bad = [
        f"{path} ({int(np.sum(~np.isfinite(value)))} of {np.size(value)} values)"
        for path, value in sorted(mapped.items())
        if np.issubdtype(np.asarray(value).dtype, np.floating)
        and not np.isfinite(np.asarray(value, np.float64)).all()
    ]
    if bad:
        raise OctoLayoutError(
            f"non-finite parameters in the Octo checkpoint: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; the converted model would predict NaN actions"
        )


def check_statistics(path: str, statistics: Mapping[str, Any], action_dim: int) -> None:
    """Every dataset's action statistics: finite, all of one length (at most the model's action
    dim: a dataset's actions may be padded), the mask too, of true/false values."""
    datasets = {"octo": statistics} if "action" in statistics else statistics
    for name, entry in datasets.items():
        action = entry.get("action") if isinstance(entry, Mapping) else None
        if not isinstance(action, Mapping):
            continue  # native_statistics names a dataset without action statistics
        lengths = {k: np.size(action[k]) for k in STATISTICS_KEYS if k in action}
        dims = lengths.get("mean", max(lengths.values(), default=0))
        wrong = {k: n for k, n in lengths.items() if n != dims}
        if wrong or dims > action_dim:
            raise OctoLayoutError(
                f"{path}: {name!r} action statistics have lengths {lengths}: expected one "
                f"value per action dim (at most the model's {action_dim})"
            )
        for key in STATISTICS_KEYS[:-1]:
            if key in action and not np.isfinite(np.asarray(action[key], np.float64)).all():
                raise OctoLayoutError(f"{path}: {name!r} action {key} holds NaN or Inf")
        if "mask" in action and not all(isinstance(m, bool) for m in action["mask"]):
            raise OctoLayoutError(f"{path}: {name!r} action mask must be true/false values")


STATISTICS_KEYS = ("mean", "std", "min", "max", "p01", "p99", "mask")

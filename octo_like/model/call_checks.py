"""The arguments of Octo's call forms (`create_tasks`, `sample_actions`, `run_transformer`)
checked by name before they reach the network: a wrong key, type, dtype or range is refused
naming the argument, the key, what was expected and what was given, instead of being dropped,
wrapped around (a float goal cast to uint8), or failing deep inside (a KeyError in the
statistics, a NaN action from an out-of-vocabulary token).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np


def _close(key: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_rng(rng: Any) -> None:
    """A JAX PRNG key (``jax.random.key(SEED)`` or a raw uint32[2] ``PRNGKey``)."""
    if isinstance(rng, jax.Array | np.ndarray):
        dtype = rng.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (
            np.dtype(dtype) == np.uint32 and np.shape(rng)[-1:] == (2,)
        ):
            return
    raise TypeError(
        f"rng must be a JAX key, jax.random.key(SEED), got {type(rng).__name__} {rng!r:.60}"
    )


def check_sample_shape(sample_shape: Any) -> tuple[int, ...]:
    """A tuple of non-negative ints (Octo's ``sample_shape=(n,)``)."""
    if isinstance(sample_shape, list | tuple) and all(
        isinstance(n, int | np.integer) and n >= 0 for n in sample_shape
    ):
        return tuple(int(n) for n in sample_shape)
    raise TypeError(f"sample_shape must be a tuple of ints such as (3,), got {sample_shape!r}")


def check_statistics_not_key(value: Any) -> None:
    """`sample_actions`' third argument is statistics (Octo's signature), not a key."""
    if _is_key(value):
        raise TypeError(
            "sample_actions' third argument is unnormalization_statistics (Octo's "
            "signature); pass the key as rng=..."
        )


def _is_key(value: Any) -> bool:
    """A JAX PRNG key (new-style or a raw uint32[2]) passed where statistics belong."""
    if isinstance(value, Mapping) or value is None:
        return False
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (
        jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        or (np.dtype(dtype) == np.uint32 and np.shape(value) == (2,))
    )


def check_unnormalization_statistics(value: Any, datasets: Mapping[str, Any]) -> None:
    """One dataset's statistics (``dataset_statistics[NAME]["action"]`` or the whole entry
    ``dataset_statistics[NAME]``), not a dataset's name or every dataset's statistics."""
    if value is None or (isinstance(value, Mapping) and not value):
        return  # None or {}: normalized actions, as predicted
    names = ", ".join(map(repr, sorted(datasets))) or "none"
    if isinstance(value, str | bytes):
        raise TypeError(
            f"unnormalization_statistics={value!r} is a name; pass the statistics, "
            f"model.dataset_statistics[{value!r}]['action'] (datasets: {names})"
        )
    if not isinstance(value, Mapping):
        raise TypeError(
            f"unnormalization_statistics must be a dict of statistics, got {type(value).__name__}"
        )
    if "mean" not in value and "statistics" not in value:
        keys = sorted(value)[:5]
        raise TypeError(
            f"unnormalization_statistics holds {keys}, not one dataset's statistics (mean, std, "
            "...): for the whole model.dataset_statistics pass "
            f"model.dataset_statistics[NAME]['action'] (datasets: {names})"
        )


def check_texts(texts: Any) -> list[str | bytes]:
    """One instruction per task: str (UTF-8 encodable) or bytes."""
    if isinstance(texts, str | bytes):
        texts = [texts]
    if not isinstance(texts, Sequence | np.ndarray):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    out = []
    for index, text in enumerate(texts):
        if isinstance(text, np.str_ | np.bytes_):
            text = text.item()
        if not isinstance(text, str | bytes):
            raise TypeError(f"texts[{index}] must be str, got {type(text).__name__} {text!r:.40}")
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"texts[{index}] is not valid text ({error.reason} at character "
                    f"{error.start}): {text!r:.60}"
                ) from error
        out.append(text)
    return out


def check_goals(goals: Any, image_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Goal images keyed by camera (``primary``) or image key (``image_primary``): each a
    camera the model reads, uint8[b, h, w, 3] of its size; returns them keyed by camera.
    `image_shapes`: {camera: (h, w, 3)} of the model's goal images."""
    if not isinstance(goals, Mapping):
        raise TypeError(
            f"goals must be a dict {{'image_<camera>': uint8[b, h, w, 3]}}, got "
            f"{type(goals).__name__}"
        )
    known = [f"image_{c}" for c in image_shapes]
    out = {}
    for key, value in goals.items():
        is_image_key = str(key).startswith("image_")
        camera = key[len("image_") :] if is_image_key else key
        if camera not in image_shapes:
            if not is_image_key:
                continue  # Octo's goals may carry other keys (proprio, ...): not read
            raise ValueError(
                f"goals[{key!r}]: not a goal camera of this model{_close(str(key), known)}; "
                f"it reads goal images {known}"
            )
        array = np.asarray(value)
        expected = tuple(image_shapes[camera])
        if array.dtype != np.uint8:
            raise TypeError(
                f"goals[{key!r}] has dtype {array.dtype}; goal images are uint8 0-255 "
                "(a float image would wrap around when cast)"
            )
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"goals[{key!r}] has shape {list(array.shape)}, expected [batch, "
                f"{', '.join(map(str, expected))}]"
            )
        out[camera] = array
    return out


def check_known_keys(part: str, tree: Mapping[str, Any], spec_paths: Sequence[str]) -> None:
    """Refuses an ``image_*`` key the model does not read (a misspelled camera would be dropped
    silently) and, in observations, a task's keys (the two dicts swapped). Other keys pass, as
    in Octo, whose batches carry keys a model may not read (``proprio``, ``task_completed``)."""
    cameras = sorted({p.split("/")[0] for p in spec_paths if p.startswith("image_")})
    for key in tree:
        if part == "observation" and key in ("language_instruction", "language_tokens"):
            raise ValueError(
                f"observations hold the task key {key!r}: are observations and tasks swapped? "
                f"(sample_actions(observations, tasks, ...))"
            )
        if str(key).startswith("image_") and key not in cameras:
            raise ValueError(
                f"unknown {part} key {key!r}{_close(str(key), cameras)}: not a camera of this "
                f"model, which reads {cameras}"
            )


def check_timestep_pad_mask(mask: Any, batch: int, window: int) -> np.ndarray:
    """bool[b, w] with at least one valid timestep per batch row."""
    array = np.asarray(mask)
    if array.shape != (batch, window):
        raise ValueError(
            f"timestep_pad_mask has shape {list(array.shape)}, expected [batch, window] = "
            f"[{batch}, {window}] (the observations')"
        )
    if array.dtype != bool:
        raise TypeError(f"timestep_pad_mask must be bool, got {array.dtype}")
    empty = np.flatnonzero(~array.any(axis=1))
    if empty.size:
        raise ValueError(
            f"timestep_pad_mask rows {empty.tolist()} are all False: no valid timestep to act on"
        )
    return array


def check_token_ids(tokens: Any, vocab_size: int) -> None:
    """Token ids inside the vocabulary (an id beyond it reads past the embedding table)."""
    ids = np.asarray(tokens)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise ValueError(
            f"language token ids {sorted(set(bad.tolist()))[:5]} are outside the tokenizer's "
            f"vocabulary 0..{vocab_size - 1}"
        )


def check_call(
    observations: Any, tasks: Any, timestep_pad_mask: Any, input_spec: Mapping[str, Any]
) -> None:
    """What `network_inputs` is given, by name: two dicts, the right way round; observation
    keys the model reads; a [batch, window] timestep mask with a valid step per row; tasks of
    the observations' batch."""
    for name, value in (("observations", observations), ("tasks", tasks)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    check_known_keys("observation", observations, list(input_spec["observation"]))
    arrays = {
        k: np.shape(v) for k, v in observations.items() if k.startswith("image_") or k == "proprio"
    }
    if not arrays:
        return
    key, shape = next(iter(arrays.items()))
    expected = input_spec["observation"].get(key, {}).get("shape")
    if expected is not None and len(shape) != len(expected) + 1:
        raise ValueError(
            f"observation {key!r} has shape {list(shape)}, expected [batch, window, "
            f"{', '.join(map(str, expected[1:]))}]"
            + (": the window axis is missing?" if len(shape) == len(expected) else "")
        )
    batch, window = shape[:2]
    mask = observations.get("timestep_pad_mask") if timestep_pad_mask is None else timestep_pad_mask
    if mask is not None:
        check_timestep_pad_mask(mask, batch, window)
    task_batches = {
        k: np.shape(v)[0]
        for k, v in tasks.items()
        if k != "pad_mask_dict" and not isinstance(v, Mapping) and np.ndim(v) > 0
    }
    wrong = {k: b for k, b in task_batches.items() if b != batch}
    if wrong:
        raise ValueError(
            f"tasks have batch {sorted(set(wrong.values()))} ({', '.join(sorted(wrong))}) but "
            f"observations have batch {batch} ({key} {list(shape)}): make as many tasks as "
            "observations (create_tasks with one text or goal per observation)"
        )

"""One robot episode per file (``.npz`` or ``.hdf5`` / ``.h5``): the layout, a strict reader and a
writer. This is the input of the raw-episode converter (`octo_like.data.raw_episodes`).

The layout (the same key names in both formats; in HDF5 ``images`` is a group)::

    images/<camera>  uint8[T, h, w, 3]   one entry per camera, any name except "state"
    action           float[T, A]         in the robot's own units
    instruction      string              one per episode (a 0-d string array / HDF5 string
                                         dataset / HDF5 root attribute), or string[T] per step;
                                         "" when the episode has no instruction
    state            float[T, S]         optional: proprioception
    reward           float[T]            optional (default: 1 at the last step if the episode
                                         succeeded, else 0)
    is_terminal      bool[T]             optional (default: True at the last step)
    success          bool                optional, per episode (0-d array / dataset / attribute)

Other keys are ignored (and reported in `RawEpisode.ignored_keys`). Every problem raises an
`EpisodeError` whose message starts with the file's path, so a conversion of a thousand files
says which one to fix and why.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from octo_like.data.validation import DataError
from octo_like.normalization import VALUE_LIMIT

EPISODE_SUFFIXES = (".npz", ".hdf5", ".h5")
IMAGES, ACTION, INSTRUCTION, STATE = "images", "action", "instruction", "state"
REWARD, IS_TERMINAL, SUCCESS = "reward", "is_terminal", "success"
_KNOWN = {IMAGES, ACTION, INSTRUCTION, STATE, REWARD, IS_TERMINAL, SUCCESS}


class EpisodeError(DataError):
    """An episode file breaks the layout; `path` and `problem` are kept for reports."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class RawEpisode:
    """One validated episode; every per-step array has the same length T >= 1."""

    path: str
    images: Mapping[str, np.ndarray]  # camera -> uint8[T, h, w, 3]
    action: np.ndarray  # float32[T, A]
    instructions: tuple[str, ...]  # one per step
    state: np.ndarray | None = None  # float32[T, S]
    reward: np.ndarray | None = None  # float32[T]
    is_terminal: np.ndarray | None = None  # bool[T]
    success: bool | None = None
    ignored_keys: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return int(self.action.shape[0])

    @property
    def instruction(self) -> str:
        """The episode's instruction (the first step's, when they vary)."""
        return self.instructions[0]


def list_episode_files(source_dir: str | os.PathLike) -> list[str]:
    """Episode files under `source_dir` (recursively), sorted; fails if there are none."""
    root = pathlib.Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"episode folder {os.fspath(root)!r} does not exist")
    files = sorted(
        os.fspath(p) for p in root.rglob("*") if p.is_file() and p.suffix in EPISODE_SUFFIXES
    )
    if not files:
        others = sorted({p.suffix or p.name for p in root.rglob("*") if p.is_file()})[:10]
        raise FileNotFoundError(
            f"no episode files ({', '.join(EPISODE_SUFFIXES)}) under {os.fspath(root)!r}"
            + (f"; found only {others}" if others else " (the folder is empty)")
        )
    return files


# ------------------------------------------------------------------------------- reading
def _string(value: Any, path: str = "", where: str = INSTRUCTION) -> str | None:
    """A 0-d string-like value -> str; None if it is not a string. Bytes that are not UTF-8
    raise an `EpisodeError` naming the file and `where` (the tokenizer would fail on them later,
    naming neither)."""
    value = np.asarray(value)
    if value.shape != () or value.dtype.kind not in "USO":
        return None
    item = value.item()
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as error:
            shown = item.decode("utf-8", errors="replace")[:80]
            raise EpisodeError(
                path,
                f"'{where}' is not valid UTF-8 ({error.reason} at byte {error.start}): "
                f"{shown!r} (U+FFFD marks the bad bytes); write instructions as UTF-8 text",
            ) from error
    return item if isinstance(item, str) else None


def _strings(path: str, value: Any) -> tuple[str, ...] | str:
    """The instruction entry: a str (per episode) or a tuple of T strs (per step)."""
    single = _string(value, path)
    if single is not None:
        return single
    array = np.asarray(value)
    if array.ndim == 1 and array.dtype.kind in "USO":
        items = [_string(v, path, f"{INSTRUCTION}[{step}]") for step, v in enumerate(array)]
        if all(s is not None for s in items):
            return tuple(items)
    raise EpisodeError(
        path,
        f"'{INSTRUCTION}' must be a string or one string per step, got "
        f"{array.dtype}{list(array.shape)}",
    )


def _read_npz(path: str) -> tuple[dict[str, Any], list[str]]:
    """Flat ``{key: array}`` of the layout's keys, plus the ignored keys."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    return _split_known(entries)


def _read_hdf5(path: str) -> tuple[dict[str, Any], list[str]]:
    import h5py

    entries: dict[str, Any] = {}
    nested: list[str] = []  # groups inside groups: not part of the layout
    with h5py.File(path, "r") as file:
        for key, value in file.attrs.items():  # per-episode values may be attributes
            if key in (INSTRUCTION, SUCCESS):
                entries[key] = value
        for key, node in file.items():
            if isinstance(node, h5py.Group):
                for child, dataset in node.items():
                    if isinstance(dataset, h5py.Dataset):
                        entries[f"{key}/{child}"] = dataset[()]
                    else:
                        nested.append(f"{key}/{child}/")
            else:
                entries[key] = node[()]
    known, ignored = _split_known(entries)
    return known, sorted(ignored + nested)


def _split_known(entries: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    known = {k: v for k, v in entries.items() if k.split("/")[0] in _KNOWN}
    ignored = sorted(k for k in entries if k.split("/")[0] not in _KNOWN)
    return known, ignored


def read_episode(path: str | os.PathLike) -> RawEpisode:
    """Reads and validates one episode file (layout in the module docstring)."""
    path = os.fspath(path)
    suffix = pathlib.Path(path).suffix
    if suffix not in EPISODE_SUFFIXES:
        raise EpisodeError(path, f"unknown file type {suffix!r}; expected {EPISODE_SUFFIXES}")
    try:
        entries, ignored = _read_npz(path) if suffix == ".npz" else _read_hdf5(path)
    # A truncated or corrupt .npz raises BadZipFile, EOFError or zlib.error (none an OSError);
    # HDF5 raises OSError; pickled objects ValueError.
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise EpisodeError(
            path, f"cannot read the file ({type(error).__name__}: {error})"
        ) from error
    return validate_entries(path, entries, tuple(ignored))


def float_array(path: str, key: str, value: Any, rank: int) -> np.ndarray:
    """`value` as float32 of rank 1 ([T]) or 2 ([T, D]); NaN, Inf and values whose square
    overflows float32 are refused naming `key`, the steps and the dims."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise EpisodeError(path, f"'{key}' has dtype {array.dtype}, expected numbers")
    if array.ndim != rank:
        expected = "[T]" if rank == 1 else "[T, D]"
        raise EpisodeError(path, f"'{key}' has shape {list(array.shape)}, expected {expected}")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    huge = np.isfinite(array) & (np.abs(array.astype(np.float64)) > VALUE_LIMIT)
    for mask, problem in (
        (bad, f"NaN/Inf in '{key}'"),
        (huge, f"value(s) beyond +-{VALUE_LIMIT:.3g} (whose square overflows float32) in '{key}'"),
    ):
        if mask.any():
            steps = np.flatnonzero(mask.reshape(len(array), -1).any(axis=1))
            where = f"steps {steps[:5].tolist()}{' ...' if len(steps) > 5 else ''}"
            if rank == 2:
                where += f" (dims {np.flatnonzero(mask.any(axis=0)).tolist()})"
            if mask is huge:
                where += f", e.g. {array[np.nonzero(mask)][0]:.6g}: a logging error?"
            raise EpisodeError(path, f"{problem} at {where}")
    return array


def validate_entries(path: str, entries: dict[str, Any], ignored: tuple[str, ...]) -> RawEpisode:
    """A `RawEpisode` from the layout's flat keys (``images/<camera>``, ``action``, ...), each
    checked; the check every reader (episode files, LeRobot directories) shares."""
    cameras = sorted(k.split("/", 1)[1] for k in entries if k.startswith(f"{IMAGES}/"))
    missing = [k for k in (ACTION, INSTRUCTION) if k not in entries]
    if not cameras:
        missing.append(f"{IMAGES}/<camera>")
    if missing:
        found = sorted(entries) + list(ignored)
        raise EpisodeError(path, f"missing key(s) {missing} (found {found})")
    if STATE in cameras:
        raise EpisodeError(path, "a camera may not be called 'state' (it is the proprio key)")
    images = {}
    for camera in cameras:
        key = f"{IMAGES}/{camera}"
        image = np.asarray(entries[key])
        if image.dtype != np.uint8:
            raise EpisodeError(
                path,
                f"'{key}' has dtype {image.dtype}, expected uint8 (0-255); convert floats in "
                "[0, 1] with (x * 255).round().astype(np.uint8)",
            )
        if image.ndim != 4 or image.shape[-1] != 3:
            raise EpisodeError(
                path, f"'{key}' has shape {list(image.shape)}, expected [T, h, w, 3] (RGB)"
            )
        images[camera] = image
    lengths = {f"{IMAGES}/{c}": len(v) for c, v in images.items()}
    lengths[ACTION] = len(np.asarray(entries[ACTION]))
    instructions = _strings(path, entries[INSTRUCTION])
    if isinstance(instructions, tuple):
        lengths[INSTRUCTION] = len(instructions)
    for key in (STATE, REWARD, IS_TERMINAL):
        if key in entries:
            lengths[key] = len(np.atleast_1d(entries[key]))
    if len(set(lengths.values())) > 1:
        raise EpisodeError(path, f"per-step keys differ in length: {lengths}")
    length = lengths[ACTION]
    if length == 0:
        raise EpisodeError(path, "empty episode (0 steps)")
    action = float_array(path, ACTION, entries[ACTION], rank=2)
    state = float_array(path, STATE, entries[STATE], rank=2) if STATE in entries else None
    reward = float_array(path, REWARD, entries[REWARD], rank=1) if REWARD in entries else None
    is_terminal = None
    if IS_TERMINAL in entries:
        is_terminal = np.asarray(entries[IS_TERMINAL])
        if is_terminal.ndim != 1 or is_terminal.dtype.kind not in "bui":
            raise EpisodeError(path, f"'{IS_TERMINAL}' must be bool[T], got {is_terminal.dtype}")
        is_terminal = is_terminal.astype(bool)
    success = None
    if SUCCESS in entries:
        value = np.asarray(entries[SUCCESS])
        if value.size != 1 or value.dtype.kind not in "bui":
            raise EpisodeError(path, f"'{SUCCESS}' must be one bool, got {value!r}")
        success = bool(value.reshape(()))
    if isinstance(instructions, str):
        instructions = (instructions,) * length
    return RawEpisode(
        path=path,
        images=images,
        action=action,
        instructions=instructions,
        state=state,
        reward=reward,
        is_terminal=is_terminal,
        success=success,
        ignored_keys=ignored,
    )


# ------------------------------------------------------------------------------- writing
def write_episode_file(
    path: str | os.PathLike,
    *,
    images: Mapping[str, np.ndarray],
    action: np.ndarray,
    instruction: str | Sequence[str],
    state: np.ndarray | None = None,
    reward: np.ndarray | None = None,
    is_terminal: np.ndarray | None = None,
    success: bool | None = None,
) -> str:
    """Writes one episode in the layout above (format from the suffix); returns the path.

    For recording code on the robot side, and for examples and tests. A per-episode instruction
    and `success` go to HDF5 root attributes; NPZ files are compressed.
    """
    path = os.fspath(path)
    suffix = pathlib.Path(path).suffix
    if suffix not in EPISODE_SUFFIXES:
        raise ValueError(f"{path}: episode files end in one of {EPISODE_SUFFIXES}")
    arrays: dict[str, np.ndarray] = {
        f"{IMAGES}/{camera}": np.asarray(image) for camera, image in images.items()
    }
    arrays[ACTION] = np.asarray(action)
    for key, value in ((STATE, state), (REWARD, reward), (IS_TERMINAL, is_terminal)):
        if value is not None:
            arrays[key] = np.asarray(value)
    per_episode: dict[str, Any] = {}
    if isinstance(instruction, str):
        per_episode[INSTRUCTION] = instruction
    else:
        arrays[INSTRUCTION] = np.asarray([str(s) for s in instruction])
    if success is not None:
        per_episode[SUCCESS] = bool(success)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if suffix == ".npz":
        extra = {k: np.asarray(v) for k, v in per_episode.items()}
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays, **extra)
        return path
    import h5py

    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if value.dtype.kind == "U":  # HDF5 stores UTF-8 strings, not numpy unicode
                file.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
            else:
                file.create_dataset(key, data=value)
        for key, value in per_episode.items():
            file.attrs[key] = value
    return path

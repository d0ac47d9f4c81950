"""Checkpoints that verify themselves: a SHA-256 for every file of a step, checked on load.

Orbax's finalization marker says a step was written completely, not that its bytes are still
the ones written: a flipped bit in a parameter file loads as a wrong (or NaN) weight and a
truncated file fails deep inside TensorStore. So the process that saves writes
``<step>/checksums.json`` once orbax has finalized the step::

    {"format": 1, "files": {"params/encoder.kernel/0.0": {"size": 4096, "sha256": "..."}, ...}}

and every load (`OctoModel.load_pretrained`, `Policy`, fine-tuning, training resume,
`scripts/verify_checkpoint.py`) checks the files of the items it reads first. Any mismatch,
missing file or unreadable manifest is one `CheckpointCorruptError` naming the checkpoint, the
item and the array. The ``params`` item is written one directory per array (no OCDBT), so a
file names its array; the train state keeps OCDBT's shared data files, which name the item and
file. Steps written before checksums existed load with a warning.

A loaded model whose parameters are not all finite is refused too (`check_finite`): that is
what a corrupted float looks like once read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from octo_like import storage

log = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
FORMAT = 1
_CHUNK = 8 << 20  # bytes hashed per read


class CheckpointCorruptError(ValueError):
    """A checkpoint's files differ from what was saved, or its parameters are not finite."""


def file_digest(path: str) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex digest) of one file."""
    digest = hashlib.sha256()
    size = 0
    with storage.open_file(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_checksums(step_dir: str) -> int:
    """Writes ``step_dir/checksums.json`` over every file of the finalized step; returns the
    number of files. Atomic: a crash leaves no manifest (the step then loads unverified)."""
    files = {}
    for relative in storage.walk_files(step_dir):
        if relative == CHECKSUMS_FILE or relative.split("/")[-1].startswith(".checksums"):
            continue
        size, sha = file_digest(storage.join(step_dir, *relative.split("/")))
        files[relative] = {"size": size, "sha256": sha}
    manifest = {"format": FORMAT, "files": files}
    storage.write_text(storage.join(step_dir, CHECKSUMS_FILE), json.dumps(manifest, indent=0))
    return len(files)


def has_checksums(step_dir: str) -> bool:
    return storage.exists(storage.join(step_dir, CHECKSUMS_FILE))


def read_manifest(step_dir: str) -> dict[str, dict[str, Any]] | None:
    """The manifest's ``files`` table; None for a step saved without checksums."""
    path = storage.join(step_dir, CHECKSUMS_FILE)
    if not storage.exists(path):
        return None
    try:
        manifest = json.loads(storage.read_text(path))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
        for entry in files.values():
            int(entry["size"]), str(entry["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointCorruptError(
            f"checkpoint {step_dir}: its checksum manifest {CHECKSUMS_FILE} is unreadable "
            f"({type(error).__name__}: {error})"
        ) from error
    return files


def describe_file(relative: str) -> str:
    """``"params/encoder.kernel/0.0"`` -> ``"item 'params', array 'encoder.kernel' (file ...)"``."""
    parts = relative.split("/")
    if len(parts) == 1:
        return f"step file {relative!r}"
    item, rest = parts[0], parts[1:]
    inner = "/".join(rest)
    if rest[0] in ("_METADATA", "_sharding", "metadata", "array_metadatas", "manifest.ocdbt"):
        return f"item {item!r}, metadata file {inner}"
    if rest[0].startswith("ocdbt.process_") or rest[0] == "d":
        return f"item {item!r}, data file {inner} (shared by several arrays)"
    if len(rest) == 2:  # one directory per array: <array>/.zarray, <array>/<chunk>
        return f"item {item!r}, array {rest[0]!r} (file {inner})"
    return f"item {item!r}, file {inner}"


def verify_checksums(step_dir: str, items: Iterable[str] | None = None) -> bool:
    """Checks the files of `items` (default: the whole step) against the manifest.

    Returns False (and logs a warning) for a step saved without checksums; raises
    `CheckpointCorruptError` listing every missing, resized or changed file.
    """
    files = read_manifest(step_dir)
    if files is None:
        log.warning(
            "checkpoint %s has no %s (saved before checksums or interrupted before they were "
            "written): loading it unverified",
            step_dir,
            CHECKSUMS_FILE,
        )
        return False
    wanted = None if items is None else set(items)
    problems = []
    for relative, entry in sorted(files.items()):
        if wanted is not None and relative.split("/")[0] not in wanted:
            continue
        path = storage.join(step_dir, *relative.split("/"))
        where = describe_file(relative)
        if not storage.exists(path):
            problems.append(f"{where}: missing")
            continue
        size, sha = file_digest(path)
        if size != entry["size"]:
            problems.append(f"{where}: {size} bytes, saved {entry['size']}")
        elif sha != entry["sha256"]:
            problems.append(f"{where}: contents changed (SHA-256 mismatch)")
    if wanted is not None:  # an item on disk that the manifest does not cover
        listed = {relative.split("/")[0] for relative in files}
        problems += [
            f"item {item!r}: on disk but not in the checksum manifest"
            for item in sorted(wanted - listed)
            if storage.exists(storage.join(step_dir, item))
        ]
    if problems:
        raise CheckpointCorruptError(_listing(f"checkpoint {step_dir} is corrupt", problems))
    return True


def check_finite(params: Any, where: str) -> None:
    """Raises `CheckpointCorruptError` naming every parameter array with NaN or Inf.

    Counted on the arrays' devices, so sharded multi-host parameters are checked whole."""
    import jax
    import jax.numpy as jnp

    leaves = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    counts = jax.jit(lambda xs: [jnp.sum(~jnp.isfinite(x)) for x in xs])([x for _, x in leaves])
    bad = []
    for (path, leaf), count in zip(leaves, counts, strict=True):
        if int(count):
            name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            bad.append(f"{name}: {int(count)} of {leaf.size} values are NaN/Inf")
    if bad:
        raise CheckpointCorruptError(
            _listing(f"{where}: refusing parameters that are not finite", bad)
        )


def _listing(headline: str, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
    return f"{headline} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  {shown}"

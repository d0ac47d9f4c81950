"""Checkpoints that verify themselves: a SHA-256 for every file of a step, checked on load.

Orbax's finalization marker says a step was written completely, not that its bytes are still
the ones written: a flipped bit in a parameter file loads as a wrong (or NaN) weight and a
truncated file fails deep inside TensorStore. So the process that saves writes
``<step>/checksums.json`` once orbax has finalized the step::

    {"format": 1, "files": {"params/encoder.kernel/0.0": {"size": 4096, "sha256": "..."}, ...},
     "assets": {"language_assets/spiece.model": {...}, ...}}

``assets`` covers what the step reads from beside it (the tokenizer and T5 config copied to
``<checkpoints>/language_assets``): a flipped bit in ``spiece.model`` changes every instruction.

and every load (`OctoModel.load_pretrained`, `Policy`, fine-tuning, training resume,
`scripts/verify_checkpoint.py`) checks the files of the items it reads first. Any mismatch,
missing file or unreadable manifest is one `CheckpointCorruptError` naming the checkpoint, the
item and the array. The ``params`` item is written one directory per array (no OCDBT), so a
file names its array; the train state keeps OCDBT's shared data files, which name the item and
file. A step without a manifest is not trusted for resuming training and fails
`scripts/verify_checkpoint.py`; loaders read it with a warning that names the risk.

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


class UntrustedCheckpointError(ValueError):
    """A checkpoint step has no checksum manifest: nothing vouches for its bytes."""


# Directories beside the step directories whose files a step reads (the tokenizer, T5 config).
SHARED_ASSETS = ("language_assets",)


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
    manifest = {"format": FORMAT, "files": files, "assets": _asset_digests(step_dir)}
    storage.write_text(storage.join(step_dir, CHECKSUMS_FILE), json.dumps(manifest, indent=0))
    return len(files) + len(manifest["assets"])


def _root_of(step_dir: str) -> str:
    return storage.dirname(storage.absolute(step_dir))


def _asset_digests(step_dir: str) -> dict[str, dict[str, Any]]:
    root, digests = _root_of(step_dir), {}
    for name in SHARED_ASSETS:
        directory = storage.join(root, name)
        if not storage.exists(directory):
            continue
        for relative in storage.walk_files(directory):
            size, sha = file_digest(storage.join(directory, *relative.split("/")))
            digests[f"{name}/{relative}"] = {"size": size, "sha256": sha}
    return digests


def has_checksums(step_dir: str) -> bool:
    return storage.exists(storage.join(step_dir, CHECKSUMS_FILE))


def read_manifest(step_dir: str) -> dict[str, dict[str, Any]] | None:
    """The manifest's ``files`` table; None for a step saved without checksums."""
    full = _read(step_dir)
    return None if full is None else full["files"]


def _read(step_dir: str) -> dict[str, Any] | None:
    path = storage.join(step_dir, CHECKSUMS_FILE)
    if not storage.exists(path):
        return None
    try:
        manifest = json.loads(storage.read_text(path))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
        assets = manifest.get("assets", {})
        for entry in (*files.values(), *assets.values()):
            int(entry["size"]), str(entry["sha256"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise CheckpointCorruptError(
            f"checkpoint {step_dir}: its checksum manifest {CHECKSUMS_FILE} is unreadable "
            f"({type(error).__name__}: {error})"
        ) from error
    return {"files": files, "assets": assets}


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


def verify_checksums(
    step_dir: str, items: Iterable[str] | None = None, *, warn_unverified: bool = True
) -> bool:
    """Checks the files of `items` (default: the whole step) and the shared assets (tokenizer)
    against the manifest.

    Returns False for a step saved without checksums (logging a warning that names the risk,
    unless `warn_unverified` is False: the caller then decides); raises
    `CheckpointCorruptError` listing every missing, resized or changed file.
    """
    manifest = _read(step_dir)
    if manifest is None:
        if warn_unverified:
            log.warning(
                "checkpoint %s has no %s (saved by an older version, or the save was "
                "interrupted): loading it UNVERIFIED, so corrupted bytes would load as wrong "
                "weights or a wrong tokenizer without an error. `python "
                "scripts/verify_checkpoint.py %s --write_missing` vouches for it as it is now",
                step_dir,
                CHECKSUMS_FILE,
                step_dir,
            )
        return False
    files = manifest["files"]
    wanted = None if items is None else set(items)
    problems = []
    checks = [
        (describe_file(relative), storage.join(step_dir, *relative.split("/")), entry)
        for relative, entry in sorted(files.items())
        if wanted is None or relative.split("/")[0] in wanted
    ]
    root = _root_of(step_dir)
    checks += [
        (f"shared asset {relative}", storage.join(root, *relative.split("/")), entry)
        for relative, entry in sorted(manifest["assets"].items())
    ]
    for where, path, entry in checks:
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

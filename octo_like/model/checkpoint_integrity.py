"""Checkpoints that verify themselves: a SHA-256 for every file of a step, checked on load.

Orbax's finalization marker says a step was written completely, not that its bytes are still
the ones written: a flipped bit in a parameter file loads as a wrong (or NaN) weight and a
truncated file fails deep inside TensorStore. So the process that saves writes
``<step>/checksums.json`` once orbax has finalized the step's items::

    {"format": 2, "files": {"params/encoder.kernel/0.0": {"size": 4096, "sha256": "..."}, ...},
     "assets": {"language_assets/spiece.model": {...}}, "count": {"files": 1189, "assets": 1},
     "tables_sha256": "...", "step_metadata_sha256": "..."}

``assets`` covers what the step reads from beside it (the tokenizer and T5 config copied to
``<checkpoints>/language_assets``): a flipped bit in ``spiece.model`` changes every instruction.
``count`` and ``tables_sha256`` make an emptied, truncated or edited table an error of its own.

Async saves write the manifest in orbax's post-finalization callback, before orbax commits the
step, so a committed step always has one; orbax then writes two files at commit
(`COMMITTED_BY_ORBAX`), checked by name for what they can be rather than by bytes.

Every load (`OctoModel.load_pretrained`, `Policy`, fine-tuning, training resume,
`scripts/verify_checkpoint.py`) checks the files of the items it reads first, refuses any file
of the step the manifest does not list and any tokenizer file the step's config reads that it
does not list. Any of these is one `CheckpointCorruptError` naming the checkpoint, the item and
the array or file. The ``params`` item is written one directory per array (no OCDBT), so a file
names its array; the train state keeps OCDBT's shared data files, which name the item and file.
A step without a manifest is not trusted for resuming training and fails
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
FORMAT = 2
# Format 1 (no count or digest of its tables; async saves listed _CHECKPOINT_METADATA's bytes of
# before the commit) is still read, so the steps earlier versions saved stay trusted.
READABLE_FORMATS = (1, 2)
_CHUNK = 8 << 20  # bytes hashed per read

STEP_METADATA = "_CHECKPOINT_METADATA"
COMMIT_TIME_FIELD = "commit_timestamp_nsecs"
COMMIT_SUCCESS = "commit_success.txt"
# Files orbax writes into the step when it commits it, after an async save's manifest: what
# each is, and so how it is checked.
COMMITTED_BY_ORBAX = {
    STEP_METADATA: f"orbax fills in {COMMIT_TIME_FIELD} at commit: checked as JSON, by a "
    "SHA-256 of its contents without that field",
    COMMIT_SUCCESS: "orbax writes it at commit and nothing reads it: checked by its text",
}
_COMMIT_SUCCESS_TEXT = "Checkpoint commit was successful"

# Directories beside the step directories whose files a step reads (the tokenizer, T5 config).
SHARED_ASSETS = ("language_assets",)
# What a language encoder reads from `language_assets` (what copy_language_assets copies).
_ENCODER_ASSETS = {"small": ("spiece.model",), "t5": ("spiece.model", "config.json")}


class CheckpointCorruptError(ValueError):
    """A checkpoint's files differ from what was saved, or its parameters are not finite."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint step has no checksum manifest: nothing vouches for its bytes."""


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
    for relative in _step_files(step_dir):
        if relative in COMMITTED_BY_ORBAX:
            continue
        size, sha = file_digest(storage.join(step_dir, *relative.split("/")))
        files[relative] = {"size": size, "sha256": sha}
    assets = _asset_digests(step_dir)
    try:
        step_metadata = _step_metadata_digest(step_dir)
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointCorruptError(
            f"checkpoint {step_dir}: {describe_file(STEP_METADATA)} is not orbax's JSON step "
            f"metadata ({error}); not writing checksums that would vouch for it"
        ) from error
    manifest = {
        "format": FORMAT,
        "files": files,
        "assets": assets,
        "count": {"files": len(files), "assets": len(assets)},
        "tables_sha256": _tables_digest(files, assets),
        "step_metadata_sha256": step_metadata,
    }
    storage.write_text(storage.join(step_dir, CHECKSUMS_FILE), json.dumps(manifest, indent=0))
    return len(files) + len(assets)


def _step_files(step_dir: str) -> Iterable[str]:
    """The step's files, without the manifest and what is left of writing it atomically."""
    for relative in storage.walk_files(step_dir):
        if relative != CHECKSUMS_FILE and not relative.startswith(f".{CHECKSUMS_FILE}.tmp-"):
            yield relative


def _tables_digest(files: dict[str, Any], assets: dict[str, Any]) -> str:
    text = json.dumps({"files": files, "assets": assets}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _step_metadata_digest(step_dir: str) -> str | None:
    """SHA-256 of `STEP_METADATA`'s contents without the commit time; None if it is absent.
    Raises ValueError if it is not a JSON object."""
    path = storage.join(step_dir, STEP_METADATA)
    if not storage.exists(path):
        return None
    contents = json.loads(storage.read_text(path))
    if not isinstance(contents, dict):
        raise ValueError(f"a JSON {type(contents).__name__}, not an object")
    contents.pop(COMMIT_TIME_FIELD, None)
    text = json.dumps(contents, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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


def items_digest(step_dir: str, items: Iterable[str]) -> str | None:
    """One SHA-256 over the manifest's entries of `items` (top-level item directories, e.g.
    ``params``) and of the shared assets: names what a step holds by content, so results made
    from other weights saved at the same path (a checkpoint trained again) are told apart.
    None for a step saved without checksums."""
    manifest = _read(step_dir)
    if manifest is None:
        return None
    wanted = set(items)
    files = {p: e["sha256"] for p, e in manifest["files"].items() if p.split("/")[0] in wanted}
    assets = {p: e["sha256"] for p, e in manifest["assets"].items()}
    return _tables_digest(files, assets)


def _read(step_dir: str) -> dict[str, Any] | None:
    path = storage.join(step_dir, CHECKSUMS_FILE)
    if not storage.exists(path):
        return None
    try:
        manifest = json.loads(storage.read_text(path))
        files, assets = manifest["files"], manifest.get("assets", {})
        if manifest.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
        if not isinstance(files, dict) or not isinstance(assets, dict):
            raise ValueError("its 'files' and 'assets' must be tables")
        for entry in (*files.values(), *assets.values()):
            int(entry["size"]), str(entry["sha256"])
        if manifest["format"] >= 2:
            int(manifest["count"]["files"]), int(manifest["count"]["assets"])
            str(manifest["tables_sha256"])
            manifest["step_metadata_sha256"]  # noqa: B018 - present, possibly null
        manifest["assets"] = assets  # format 1 manifests may have none
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise CheckpointCorruptError(
            f"checkpoint {step_dir}: its checksum manifest {CHECKSUMS_FILE} is unreadable "
            f"({type(error).__name__}: {error})"
        ) from error
    return manifest


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
    against the manifest, and that the manifest covers every file of the step and every asset
    its config reads.

    Returns False for a step saved without checksums (logging a warning that names the risk,
    unless `warn_unverified` is False: the caller then decides); raises
    `CheckpointCorruptError` listing every missing, resized, changed or unlisted file.
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
    files, assets = manifest["files"], manifest["assets"]
    wanted = None if items is None else set(items)
    problems = _table_problems(manifest)
    problems += [
        f"{describe_file(relative)}: on disk but not listed in {CHECKSUMS_FILE}"
        for relative in _step_files(step_dir)
        if relative not in files and relative not in COMMITTED_BY_ORBAX
    ]
    problems += _committed_file_problems(step_dir, manifest)
    problems += _unlisted_asset_problems(step_dir, assets)
    checks = [
        (describe_file(relative), storage.join(step_dir, *relative.split("/")), entry)
        for relative, entry in sorted(files.items())
        if relative not in COMMITTED_BY_ORBAX
        and (wanted is None or relative.split("/")[0] in wanted)
    ]
    root = _root_of(step_dir)
    checks += [
        (f"shared asset {relative}", storage.join(root, *relative.split("/")), entry)
        for relative, entry in sorted(assets.items())
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
    if problems:
        raise CheckpointCorruptError(_listing(f"checkpoint {step_dir} is corrupt", problems))
    return True


def _table_problems(manifest: dict[str, Any]) -> list[str]:
    """An emptied, truncated or edited table (what a per-file check cannot see)."""
    files, assets = manifest["files"], manifest["assets"]
    problems = [] if files else [f"{CHECKSUMS_FILE}: its files table is empty"]
    if manifest["format"] < 2:
        return problems
    for table, have in (("files", files), ("assets", assets)):
        written = int(manifest["count"][table])
        if len(have) != written:
            problems.append(
                f"{CHECKSUMS_FILE}: its {table} table has {len(have)} entries, {written} when "
                "it was written (entries were removed or added since)"
            )
    if len(problems) == 0 and _tables_digest(files, assets) != manifest["tables_sha256"]:
        problems.append(
            f"{CHECKSUMS_FILE}: its tables differ from the SHA-256 written with them (entries "
            "were edited since)"
        )
    return problems


def _committed_file_problems(step_dir: str, manifest: dict[str, Any]) -> list[str]:
    """`COMMITTED_BY_ORBAX`, each checked for what it can be (see there)."""
    problems = []
    where = describe_file(STEP_METADATA)
    try:
        digest = _step_metadata_digest(step_dir)
    except (ValueError, UnicodeDecodeError) as error:
        problems.append(f"{where}: not orbax's JSON step metadata ({error})")
    else:
        saved = manifest.get("step_metadata_sha256")
        if digest is None:
            problems.append(f"{where}: missing")
        elif saved is not None and digest != saved:
            problems.append(
                f"{where}: contents changed (SHA-256 without {COMMIT_TIME_FIELD} mismatch)"
            )
    path = storage.join(step_dir, COMMIT_SUCCESS)
    if storage.exists(path):
        with storage.open_file(path, "rb") as f:
            head = f.read(4097)
        if len(head) > 4096 or not head.startswith(_COMMIT_SUCCESS_TEXT.encode()):
            problems.append(
                f"{describe_file(COMMIT_SUCCESS)}: not orbax's commit note (expected a line "
                f"starting {_COMMIT_SUCCESS_TEXT!r})"
            )
    return problems


def _unlisted_asset_problems(step_dir: str, assets: dict[str, Any]) -> list[str]:
    """Tokenizer files the step's config reads that the manifest does not vouch for."""
    try:
        config = json.loads(storage.read_text(storage.join(step_dir, "config", "metadata")))
        language = config["language"]
        encoder, directory = language["encoder"], language["checkpoint_dir"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return []  # no readable config: its own file's check says what is wrong
    if directory not in SHARED_ASSETS:
        return []
    return [
        f"shared asset {directory}/{name}: the step's config reads it (language encoder "
        f"{encoder!r}) but {CHECKSUMS_FILE} does not list it"
        for name in _ENCODER_ASSETS.get(encoder, ())
        if f"{directory}/{name}" not in assets
    ]


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

"""Conditional writes: create a file only if it is absent, replace or delete it only if it is
unchanged since it was read. What a lease needs (training/checkpoints/workdir_lock.py): of
two runs that take it at the same moment, exactly one may win, and a run that lost it may not
write it back. "Check, then write" cannot promise that: with 50 ms of store latency two runs
started 10 ms apart both saw no lease and both wrote one (issue 40).

Every read returns the file's bytes with a *version token* (an opaque string); a replace or
delete names the token it expects and fails (returns None / False) when the file changed.
Which stores guarantee it, and how:

- ``gs://``: TensorStore's ``gcs`` key-value store sends Cloud Storage's generation
  preconditions: ``ifGenerationMatch=0`` to create, ``ifGenerationMatch=<generation read>`` to
  replace or delete. The server decides; atomic across machines. The token encodes the object's
  generation (in TensorStore's form).
- local paths: TensorStore's ``file`` key-value store, which compares and writes under the
  filesystem's locks: atomic between processes (tests/training/test_workdir_lease.py races
  them), and, as its documentation says, between machines on a network filesystem that
  supports shared locking.
- a path class registered with `etils.epath` that has a ``conditional_store()`` method (the
  tests' in-memory ``ram://`` and slow cross-process stores): what its store's `atomic` says.
- any other URL scheme (``s3://``, ``hdfs://``, ...): NOT atomic. The same calls work by
  check-then-write, `atomic_conditional_writes` answers False, and the caller must say so: the
  workdir lease logs a WARNING at start that two runs started together may both take it.
  (TensorStore's ``s3`` store is not used: its documentation says DELETE, and on S3-compatible
  stores even PUT, is not atomic.)

Imports `octo_like.storage` only; TensorStore (installed with orbax) is imported on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Protocol

from etils import epath

from octo_like import storage

# TensorStore's "no value" generation: a write conditioned on it succeeds only if the key is
# absent (on GCS it is sent as ifGenerationMatch=0).
_NO_VALUE = b"\x02"


@dataclasses.dataclass(frozen=True)
class Versioned:
    """A file's bytes and the version token that a conditional replace or delete expects."""

    data: bytes
    token: str


class ConditionalStore(Protocol):
    """The four operations; `path` is a local path or URL as `octo_like.storage` takes them."""

    atomic: bool  # whether the store itself guarantees the conditions (see the module doc)

    def read_versioned(self, path: str) -> Versioned | None: ...

    def create_exclusive(self, path: str, data: bytes) -> str | None: ...

    def replace_if_unchanged(self, path: str, data: bytes, token: str) -> str | None: ...

    def delete_if_unchanged(self, path: str, token: str) -> bool: ...


class TensorStoreKv:
    """Local paths (``file`` driver) and ``gs://`` (``gcs`` driver, generation preconditions)."""

    atomic = True

    def _open(self, path: str):
        import tensorstore as ts

        path = storage.absolute(path)
        if path.startswith("gs://"):
            bucket, _, key = path[len("gs://") :].partition("/")
            spec = {"driver": "gcs", "bucket": bucket}
        else:
            spec = {"driver": "file", "path": os.path.dirname(path) + os.sep}
            key = os.path.basename(path)
        return ts.KvStore.open(spec).result(), key

    def read_versioned(self, path: str) -> Versioned | None:
        store, key = self._open(path)
        result = store.read(key).result()
        if result.state != "value":
            return None
        return Versioned(bytes(result.value), result.stamp.generation.hex())

    def _write(self, path: str, data: bytes | None, expected: bytes) -> bytes:
        """The new generation; empty when the condition failed (TensorStore's "unknown")."""
        store, key = self._open(path)
        return store.write(key, data, if_equal=expected).result().generation

    def create_exclusive(self, path: str, data: bytes) -> str | None:
        generation = self._write(path, data, _NO_VALUE)
        return generation.hex() if generation else None

    def replace_if_unchanged(self, path: str, data: bytes, token: str) -> str | None:
        generation = self._write(path, data, bytes.fromhex(token))
        return generation.hex() if generation else None

    def delete_if_unchanged(self, path: str, token: str) -> bool:
        return bool(self._write(path, None, bytes.fromhex(token)))


class CheckThenWrite:
    """Stores without conditional writes: the same calls by reading first, so NOT atomic (two
    writers between one's read and its write both succeed). The token is the SHA-256 of the
    bytes."""

    atomic = False

    def read_versioned(self, path: str) -> Versioned | None:
        if not storage.exists(path):
            return None
        data = storage.read_bytes(path)
        return Versioned(data, content_token(data))

    def create_exclusive(self, path: str, data: bytes) -> str | None:
        if storage.exists(path):
            return None
        storage.write_bytes(path, data)
        return content_token(data)

    def replace_if_unchanged(self, path: str, data: bytes, token: str) -> str | None:
        current = self.read_versioned(path)
        if current is None or current.token != token:
            return None
        storage.write_bytes(path, data)
        return content_token(data)

    def delete_if_unchanged(self, path: str, token: str) -> bool:
        current = self.read_versioned(path)
        if current is None or current.token != token:
            return False
        storage.remove(path)
        return True


def content_token(data: bytes) -> str:
    """A version token for stores that have no generations: the bytes' SHA-256."""
    return hashlib.sha256(data).hexdigest()


def store_for(path: str | os.PathLike) -> ConditionalStore:
    """The conditional store that serves `path` (see the module docstring for the order)."""
    own = getattr(epath.Path(storage.absolute(path)), "conditional_store", None)
    if own is not None:
        return own()
    if not storage.has_scheme(path) or storage.absolute(path).startswith("gs://"):
        return TensorStoreKv()
    return CheckThenWrite()


def atomic_conditional_writes(path: str | os.PathLike) -> bool:
    """Whether the store at `path` guarantees the conditions (False: check-then-write)."""
    return store_for(path).atomic


def read_versioned(path: str | os.PathLike) -> Versioned | None:
    """The file's bytes and version token; None when it does not exist."""
    return store_for(path).read_versioned(os.fspath(path))


def create_exclusive(path: str | os.PathLike, data: bytes) -> str | None:
    """Writes `data` to `path` only if no file is there: the new version token, or None when
    one is (whoever created it first wins, however close the two calls)."""
    return store_for(path).create_exclusive(os.fspath(path), data)


def replace_if_unchanged(path: str | os.PathLike, data: bytes, token: str) -> str | None:
    """Replaces the file only if its version is still `token`: the new token, or None when it
    changed or was deleted since that version was read."""
    return store_for(path).replace_if_unchanged(os.fspath(path), data, token)


def delete_if_unchanged(path: str | os.PathLike, token: str) -> bool:
    """Deletes the file only if its version is still `token`; False when it changed."""
    return store_for(path).delete_if_unchanged(os.fspath(path), token)

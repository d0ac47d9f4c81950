"""An in-memory filesystem under the ``ram://`` scheme, for tests of URL-scheme paths.

TensorFlow ships a RAM filesystem (``ram://``) that `tf.io.gfile` and tf.data read and write;
registering it with `etils.epath` (which orbax, TFDS and `octo_like.storage` use) makes it a
non-local scheme that goes through exactly the code a ``gs://`` path does, with no network.
Its conditional writes (`octo_like.conditional_write`, the workdir lease) hold one lock of this
process around each compare and write: atomic, since a ``ram://`` store lives in one process.
"""

from __future__ import annotations

import os
import threading

from etils import epath
from etils.epath import backend, gpath

from octo_like import conditional_write

SCHEME = "ram://"
_ROOT = "ram"  # the path part epath's URL paths keep their scheme in ("/ram/...")


class RamPath(gpath.PosixGPath):
    """`epath.Path` for ``ram://`` URLs, backed by `tf.io.gfile` like ``gs://``."""

    def __new__(cls, *parts):
        full = "/".join(os.fspath(p) for p in parts)
        if full.startswith(SCHEME):
            full = f"/{_ROOT}/" + full[len(SCHEME) :]
        return gpath._GPath.__new__(cls, full)  # noqa: SLF001 (skips epath's scheme table)

    @property
    def _uri_scheme(self):
        if len(self.parts) >= 2 and self.parts[0] == "/" and self.parts[1] == _ROOT:
            return _ROOT
        return None

    @property
    def _backend(self):
        return backend.tf_backend if self._uri_scheme else backend.os_backend

    def conditional_store(self) -> RamConditionalStore:
        return _CONDITIONAL


class RamConditionalStore(conditional_write.CheckThenWrite):
    """Check-then-write made atomic by a lock: every writer of a ``ram://`` file is in this
    process. Tokens are the bytes' SHA-256 (`conditional_write.content_token`)."""

    atomic = True

    def __init__(self):
        self._lock = threading.Lock()

    def create_exclusive(self, path, data):
        with self._lock:
            return super().create_exclusive(path, data)

    def replace_if_unchanged(self, path, data, token):
        with self._lock:
            return super().replace_if_unchanged(path, data, token)

    def delete_if_unchanged(self, path, token):
        with self._lock:
            return super().delete_if_unchanged(path, token)


_CONDITIONAL = RamConditionalStore()  # one lock for the process's one RAM filesystem


def register() -> None:
    """Makes ``epath.Path('ram://...')`` work in this process (idempotent)."""
    epath.register_path_cls(SCHEME)(RamPath)


def clear(root: str) -> None:
    """Deletes everything under a ``ram://`` root."""
    path = epath.Path(root)
    if path.exists():
        path.rmtree()

"""One persistent XLA compilation cache for a test session.

Many tests train or evaluate the same small programs (the debug preset's train and eval steps,
the tiny models' forward passes); with one cache they compile once per session instead of once
per test. `tests/conftest.py` creates the directory (one per pytest-xdist worker: JAX's cache
writes are not atomic, so two workers must not read each other's half-written entries) and
points in-process compiles at it; `directory()` hands it to the runs tests configure.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "OCTO_LIKE_TEST_XLA_CACHE"


def create() -> tuple[str, bool]:
    """(this process's cache directory, whether this process created the session's root)."""
    root, created = os.environ.get(ENV + "_ROOT"), False
    if not root:
        root, created = tempfile.mkdtemp(prefix="octo_like-test-xla-cache-"), True
        os.environ[ENV + "_ROOT"] = root
    path = os.path.join(root, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    os.makedirs(path, exist_ok=True)
    os.environ[ENV] = path
    return path, created


def remove_root() -> None:
    shutil.rmtree(os.environ.get(ENV + "_ROOT", ""), ignore_errors=True)


def directory() -> str:
    """The cache directory of this test process (set up by tests/conftest.py)."""
    return os.environ[ENV]

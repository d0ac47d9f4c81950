"""One persistent XLA compilation cache for a test session.

Many tests train or evaluate the same small programs (the debug preset's train and eval steps,
the tiny models' forward passes and initializers); with one cache they compile once per session
instead of once per test. `tests/conftest.py` creates the directory in the first pytest process
(pytest-xdist workers inherit it, so a program compiled by one worker serves the other) and
points in-process compiles at it; `directory()` hands it to the runs tests configure. JAX's
cache writes are not atomic, but an entry read half-written fails to load and is compiled again
(with a warning), never run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "OCTO_LIKE_TEST_XLA_CACHE"


def create() -> tuple[str, bool]:
    """(the session's cache directory, whether this process created it)."""
    path = os.environ.get(ENV)
    if path:
        return path, False
    path = tempfile.mkdtemp(prefix="octo_like-test-xla-cache-")
    os.environ[ENV] = path
    return path, True


def remove() -> None:
    shutil.rmtree(os.environ.get(ENV, ""), ignore_errors=True)


def directory() -> str:
    """The session's cache directory (set up by tests/conftest.py)."""
    return os.environ[ENV]

"""Files and directories on any filesystem: local paths and URLs (``gs://``, ``s3://``, ...).

Every path the project writes or reads outside the data pipeline (workdir, checkpoints,
metrics, TensorBoard, statistics cache, language checkpoints) goes through here, so a
``gs://bucket/run`` workdir is never turned into a local directory named ``gs:``. The backend
is `etils.epath`, the library orbax and TFDS use: URLs go through `tf.io.gfile` when TensorFlow
is installed (training) and through fsspec otherwise (a notebook that only loads a policy).
Local paths are made absolute; URLs are kept as written. Imports nothing of the project.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

from etils import epath

# Schemes orbax/TensorStore write natively (besides local paths); any other URL scheme is
# staged locally by the checkpointer (see training/checkpoints/checkpoint_staging.py).
ORBAX_SCHEMES = ("gs://",)

# Errors an object store raises for a moment (a dropped connection, a 503, a timeout) rather
# than for good; TensorFlow's are matched by name so that this module needs no TensorFlow.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError)
TRANSIENT_ERROR_NAMES = frozenset(
    {"UnavailableError", "DeadlineExceededError", "AbortedError", "ServiceUnavailable",
     "TooManyRequests", "TransportError", "RetryError"}
)  # fmt: skip
RETRY_DELAYS_S = (0.5, 2.0, 8.0)  # at most three retries, ~10 s in all

_T = TypeVar("_T")


def is_transient(error: BaseException) -> bool:
    """Whether `error` is worth a retry (see TRANSIENT_ERRORS); a missing file is not."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(error, TRANSIENT_ERRORS) or type(error).__name__ in TRANSIENT_ERROR_NAMES


def retry_transient(
    read: Callable[[], _T],
    path: str | os.PathLike,
    *,
    delays_s: Sequence[float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> _T:
    """``read()``, retried after each of `delays_s` when it fails with a transient error
    (`is_transient`) and `path` is a URL; a local path or another error fails at once, and
    the last transient error is raised with the number of attempts added to its notes.
    `delays_s` defaults to `RETRY_DELAYS_S`, `sleep` to `time.sleep`."""
    if not has_scheme(path):
        return read()
    delays_s = RETRY_DELAYS_S if delays_s is None else delays_s
    sleep = sleep or time.sleep
    for attempt, delay in enumerate([*delays_s, None], start=1):
        try:
            return read()
        except Exception as error:  # noqa: BLE001  (filtered by is_transient)
            if delay is None or not is_transient(error):
                if attempt > 1:
                    error.add_note(f"reading {os.fspath(path)} failed {attempt} times")
                raise
            sleep(delay)
    raise AssertionError("unreachable")


def has_scheme(path: str | os.PathLike) -> bool:
    """True for URLs like ``gs://bucket/dir``; False for local paths."""
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """A local path expanded (``~``) and made absolute; a URL without its trailing slash."""
    path = os.fspath(path)
    if has_scheme(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else path
    return os.path.abspath(os.path.expanduser(path))


def join(base: str | os.PathLike, *parts: str) -> str:
    """`os.path.join` for local paths, '/'-joined for URLs (whatever the host OS)."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if has_scheme(base) else os.path.join(base, *parts)


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(absolute(path).rstrip("/"))


def dirname(path: str | os.PathLike) -> str:
    path = absolute(path)
    return posixpath.dirname(path) if has_scheme(path) else os.path.dirname(path)


def orbax_native(path: str | os.PathLike) -> bool:
    """Whether orbax can write checkpoints at `path` directly (local or ``gs://``)."""
    path = os.fspath(path)
    return not has_scheme(path) or path.startswith(ORBAX_SCHEMES)


def _path(path: str | os.PathLike) -> epath.Path:
    return epath.Path(absolute(path))


def exists(path: str | os.PathLike) -> bool:
    return _path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
    return _path(path).is_dir()


def isfile(path: str | os.PathLike) -> bool:
    return _path(path).is_file()


def makedirs(path: str | os.PathLike) -> None:
    _path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str | os.PathLike) -> list[str]:
    """Entry names (not paths), sorted; [] for a missing directory."""
    directory = _path(path)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir())


def open_file(path: str | os.PathLike, mode: str = "r") -> IO:
    """Opens a file for 'r', 'w', 'a' (text) or 'rb', 'wb' (bytes)."""
    return _path(path).open(mode)


def read_text(path: str | os.PathLike) -> str:
    return _path(path).read_text()


def read_bytes(path: str | os.PathLike) -> bytes:
    return _path(path).read_bytes()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomic where the filesystem allows: a crash leaves the old file or the whole new one."""
    _write(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _write(path, data)


def _write(path: str | os.PathLike, data: bytes) -> None:
    target = _path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    tmp.replace(target)


def remove(path: str | os.PathLike) -> None:
    """Deletes a file or a whole directory tree; a missing path is not an error."""
    target = _path(path)
    if target.is_dir():
        target.rmtree()
    elif target.exists():
        target.unlink()


def rename(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves a file or directory (copy + delete on object stores)."""
    source_path, target_path = _path(source), _path(target)
    if not source_path.is_dir() or not has_scheme(absolute(source)):
        source_path.rename(target_path)
        return
    copy_tree(source, target)  # object stores have no directory rename
    source_path.rmtree()


def walk_files(root: str | os.PathLike) -> Iterator[str]:
    """Paths of the files under `root`, relative to it, '/'-separated."""
    root_path = _path(root)
    stack = [root_path]
    while stack:
        directory = stack.pop()
        for child in sorted(directory.iterdir()):
            if child.is_dir():
                stack.append(child)
            else:
                yield posixpath.join(*child.relative_to(root_path).parts)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies one file across filesystems (local <-> URL), creating the target's parents."""
    target_path = _path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    source_path = _path(source)
    if has_scheme(absolute(source)) == has_scheme(absolute(target)):
        source_path.copy(target_path, overwrite=True)
    else:
        target_path.write_bytes(source_path.read_bytes())


def copy_tree(source: str | os.PathLike, target: str | os.PathLike) -> int:
    """Copies every file under `source` to the same relative path under `target`; returns
    the number of files. Directories that hold no files are not recreated."""
    count = 0
    for relative in walk_files(source):
        copy_file(join(source, *relative.split("/")), join(target, *relative.split("/")))
        count += 1
    return count


def local_file(path: str | os.PathLike) -> str:
    """A local path holding the file's bytes, for libraries that only open local files
    (sentencepiece, safetensors): `path` itself when local, else a copy under the temporary
    directory named by the URL's hash (fetched again when the sizes differ)."""
    path = absolute(path)
    if not has_scheme(path):
        return path
    digest = hashlib.sha1(path.encode()).hexdigest()[:16]
    target = os.path.join(
        tempfile.gettempdir(), "octo_like-url-cache", f"{digest}-{basename(path)}"
    )
    size = _path(path).stat().length
    if not os.path.isfile(target) or os.path.getsize(target) != size:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        copy_file(path, tmp)
        os.replace(tmp, target)
    return target

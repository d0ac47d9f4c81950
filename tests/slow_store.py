"""A slow object store shared across processes (``slow://<local directory>``), and the race
of several runs taking one workdir's lease on it.

Every operation sleeps like a request to an object store (half the latency before it acts,
half after), then works on the local directory. Conditional writes go through TensorStore's
``file`` key-value store, atomic across processes (flock + rename): what Cloud Storage's
generation preconditions give a ``gs://`` lease. Plain reads and writes (what a
check-then-write lease uses) are slow too, so the race below shows the difference. No jax or
TensorFlow is imported: a spawned contender starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
import uuid

from etils import epath
from etils.epath import backend, gpath

from octo_like import conditional_write

SCHEME = "slow://"
CHECK_THEN_WRITE_SCHEME = "slowcheck://"  # the same store without conditional writes
LATENCY_S = 0.05


def local_path(url: str) -> str:
    """The local file behind a slow store's URL (``slow:///tmp/x`` and ``slow://tmp/x`` alike)."""
    scheme = url.split("://", 1)[0] + "://"
    return "/" + str(_CLASSES[scheme](url))[len(scheme) :].lstrip("/")


def _local_args(args):
    return [local_path(a) if isinstance(a, str) and a.split("://")[0] + "://" in _CLASSES
            else a for a in args]  # fmt: skip


class _SlowBackend:
    """epath's local backend behind a delay: each call is one request."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def __getattr__(self, name):
        method = getattr(backend.os_backend, name)

        def request(*args, **kwargs):
            time.sleep(self.latency_s / 2)
            try:
                return method(*_local_args(args), **kwargs)
            finally:
                time.sleep(self.latency_s / 2)

        return request


class _SlowConditional:
    """`conditional_write.TensorStoreKv` on the local files, each call one slow request."""

    atomic = True

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self._store = conditional_write.TensorStoreKv()

    def _request(self, name: str, path: str, *args):
        time.sleep(self.latency_s / 2)
        try:
            return getattr(self._store, name)(local_path(path), *args)
        finally:
            time.sleep(self.latency_s / 2)

    def read_versioned(self, path):
        return self._request("read_versioned", path)

    def create_exclusive(self, path, data):
        return self._request("create_exclusive", path, data)

    def replace_if_unchanged(self, path, data, token):
        return self._request("replace_if_unchanged", path, data, token)

    def delete_if_unchanged(self, path, token):
        return self._request("delete_if_unchanged", path, token)


class SlowPath(gpath.PosixGPath):
    """`epath.Path` for ``slow://`` URLs (see the module docstring)."""

    latency_s = LATENCY_S
    scheme = SCHEME

    def __new__(cls, *parts):
        full = "/".join(os.fspath(p) for p in parts)
        if full.startswith(cls.scheme):
            full = f"/{cls._scheme_root()}/" + full[len(cls.scheme) :]
        return gpath._GPath.__new__(cls, full)  # noqa: SLF001 (skips epath's scheme table)

    @classmethod
    def _scheme_root(cls) -> str:  # the path part epath keeps the scheme in ("/slow/...")
        return cls.scheme[: -len("://")]

    @property
    def _uri_scheme(self):
        if len(self.parts) >= 2 and self.parts[0] == "/" and self.parts[1] == self._scheme_root():
            return self._scheme_root()
        return None

    @property
    def _backend(self):
        return _SlowBackend(self.latency_s) if self._uri_scheme else backend.os_backend

    def conditional_store(self) -> conditional_write.ConditionalStore:
        return _SlowConditional(self.latency_s)


class CheckThenWritePath(SlowPath):
    """``slowcheck://``: the slow store as an object store without conditional writes."""

    scheme = CHECK_THEN_WRITE_SCHEME

    def conditional_store(self) -> conditional_write.ConditionalStore:
        return conditional_write.CheckThenWrite()


_CLASSES = {SCHEME: SlowPath, CHECK_THEN_WRITE_SCHEME: CheckThenWritePath}


def register(latency_s: float = LATENCY_S) -> None:
    """Makes ``slow://`` and ``slowcheck://`` paths work in this process, each request
    `latency_s`."""
    SlowPath.latency_s = latency_s
    for scheme, cls in _CLASSES.items():
        epath.register_path_cls(scheme)(cls)


def _contender(index, root, latency_s, lock_module, jobs, results) -> None:
    """One process of the race: takes each job's lease at its time and keeps what it won
    until the race is over (so a later contender can only win a lease nobody holds)."""
    register(latency_s)
    os.environ["OCTO_RUN_ID"] = f"contender-{index}"  # different runs, whatever the parent's
    module = importlib.import_module(lock_module)
    conditional_write.read_versioned(os.path.join(root, "warm-up"))  # imports TensorStore
    results.put(("ready", index, ""))
    held = []
    while (job := jobs.get()) is not None:
        trial, workdir, start_at = job
        time.sleep(max(0.0, start_at - time.time()))
        lock = module.WorkdirLock(workdir, renew_s=3600)
        try:
            lock.__enter__()
        except module.WorkdirInUseError as error:
            results.put((trial, index, f"refused: {error}"))
        except Exception as error:  # noqa: BLE001 (reported, the parent fails on it)
            results.put((trial, index, f"error: {type(error).__name__}: {error}"))
        else:
            results.put((trial, index, "won"))
            held.append(lock)
    for lock in held:
        lock.release()


def race(
    root: str,
    *,
    trials: int = 10,
    contenders: int = 2,
    latency_s: float = LATENCY_S,
    stagger_s: float = 0.01,
    scheme: str = SCHEME,
    lock_module: str = "octo_like.training.checkpoints.workdir_lock",
) -> list[list[str]]:
    """Per trial, each contender's outcome ("won", "refused: <message>" or "error: ..."):
    `contenders` processes (spawned once, no jax) take the lease of a fresh workdir under the
    local directory `root` on `scheme` (``slow://``, or ``slowcheck://`` without conditional
    writes), started `stagger_s` apart; winners hold their leases until the race is over.
    `lock_module` is the module with `WorkdirLock` and `WorkdirInUseError` (the old
    check-then-write one, to show what it did)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    queues = [context.Queue() for _ in range(contenders)]
    workers = [
        context.Process(target=_contender, args=(i, root, latency_s, lock_module, q, results))
        for i, q in enumerate(queues)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            kind, index, _ = results.get(timeout=60)
            assert kind == "ready", (kind, index)
        period_s = 6 * latency_s + contenders * stagger_s  # about one try (~5 requests)
        first = time.time() + 0.2
        for trial in range(trials):
            workdir = f"{scheme}{root}/trial-{trial}-{uuid.uuid4().hex[:6]}"
            for index, jobs in enumerate(queues):
                jobs.put((trial, workdir, first + trial * period_s + index * stagger_s))
        outcomes = [[""] * contenders for _ in range(trials)]
        for _ in range(trials * contenders):
            trial, index, outcome = results.get(timeout=60 + trials * period_s)
            outcomes[trial][index] = outcome
        return outcomes
    finally:
        for jobs in queues:
            jobs.put(None)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()

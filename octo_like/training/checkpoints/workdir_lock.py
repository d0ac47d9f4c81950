"""One writer per workdir: a second training run on a workdir in use is refused at start.

Two runs on one workdir interleave checkpoints and truncate each other's ``metrics.jsonl``. On
a local disk the lock is ``<workdir>/run.lock`` held with `fcntl.flock`: the kernel releases
it when the holder exits, however it dies (kill -9 included), so there is nothing to clean up.

Object stores have no locks: there the holder keeps a lease, ``<workdir>/run.lease`` (host,
pid, start time, run identity, last renewal), written only by conditional writes
(`octo_like.conditional_write`: generation preconditions on ``gs://``): it is created only if
absent, so of two runs started together exactly one takes it; renewed every `LEASE_RENEW_S`
only if it is still the version this run wrote, so a run that lost it cannot write it back
and stops with `LeaseLostError` instead; and taken over, by a replace conditioned on the
version read, when it is older than `LEASE_EXPIRY_S` (a dead run; with a warning) or when it
was written by the same run identity (`run_identity`: a restart of the same job after a
preemption, at once). On a store without conditional writes the lease is check-then-write and
a WARNING says that two runs started together may both take it.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from octo_like import conditional_write, storage

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
LEASE_FILE = "run.lease"
LEASE_RENEW_S = 60.0
LEASE_EXPIRY_S = 600.0
RUN_ID_ENV = "OCTO_RUN_ID"  # scripts/launch.py sets it for GKE and TPU VM runs
_TAKE_ATTEMPTS = 3  # reads of a lease that keeps changing before giving up


class WorkdirInUseError(RuntimeError):
    """Another run holds the workdir."""


class LeaseLostError(RuntimeError):
    """Another run took the workdir's lease while this run held it: this run must stop."""


def run_identity(environ: Mapping[str, str]) -> str | None:
    """What a restart of the same job shares with the run it replaces: `RUN_ID_ENV` when set,
    else SLURM's cluster, job and step ids (kept when ``--requeue`` brings a preempted job
    back), else None (no identity: a restart waits for the lease to expire)."""
    if environ.get(RUN_ID_ENV):
        return environ[RUN_ID_ENV]
    if environ.get("SLURM_JOB_ID"):
        keys = ("SLURM_CLUSTER_NAME", "SLURM_JOB_ID", "SLURM_STEP_ID")
        return "slurm/" + "/".join(environ.get(key, "") for key in keys)
    return None


def _holder(run_id: str | None) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "lease_id": uuid.uuid4().hex,  # this acquisition, to recognize its own writes
    }


def _describe(holder: dict) -> str:
    text = f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
    return text + (f", run {holder['run_id']!r}" if holder.get("run_id") else "")


def _parse(data: bytes) -> dict:
    """A lease's record; {} when unreadable (it then counts as expired)."""
    try:
        lease = json.loads(data)
        float(lease["renewed"])
    except (ValueError, KeyError, TypeError):
        return {}
    return lease


class _LeaseLostInterrupt(BaseException):
    """Raised in the main thread by the renewal thread (a BaseException, so that no ``except
    Exception`` on the way swallows it); `WorkdirLock.__exit__` turns it into the
    `LeaseLostError` that names the other run."""


def _interrupt_main(_: LeaseLostError) -> None:
    """Raises `_LeaseLostInterrupt` in the main thread at its next Python instruction (between
    two training steps). Not a signal: a run started in the background (``nohup ... &``)
    ignores SIGINT, and `_thread.interrupt_main` then does nothing."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(threading.main_thread().ident), ctypes.py_object(_LeaseLostInterrupt)
    )


class WorkdirLock:
    """Context manager: holds `workdir` for this process (call on the main process only, from
    the main thread). `run_id` defaults to `run_identity(os.environ)`; `on_lost` is called from
    the renewal thread when another run took the lease (default: interrupt the main thread at
    its next Python instruction, which leaves the ``with`` block with `LeaseLostError`)."""

    def __init__(
        self,
        workdir: str,
        *,
        renew_s: float = LEASE_RENEW_S,
        expiry_s: float = LEASE_EXPIRY_S,
        run_id: str | None = None,
        on_lost: Callable[[LeaseLostError], None] = _interrupt_main,
    ):
        self.workdir = storage.absolute(workdir)
        self.renew_s, self.expiry_s = renew_s, expiry_s
        self._file = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # orders a lost lease's interrupt against release
        self._renewer: threading.Thread | None = None
        self._holder = _holder(run_id or run_identity(os.environ))
        self._token: str | None = None  # the version of the lease this run wrote last
        self._on_lost = on_lost
        self.lost: LeaseLostError | None = None

    def __enter__(self) -> WorkdirLock:
        storage.makedirs(self.workdir)
        if storage.has_scheme(self.workdir):
            self._take_lease()
        else:
            self._flock()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except _LeaseLostInterrupt:  # it landed during release
            self.release()
        if self.lost is not None and (
            exc_type is None or issubclass(exc_type, _LeaseLostInterrupt)
        ):
            raise self.lost from None

    # ------------------------------------------------------------------ local disks
    def _flock(self) -> None:
        import fcntl

        path = os.path.join(self.workdir, LOCK_FILE)
        file = open(path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            try:
                holder = json.loads(file.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            file.close()
            raise WorkdirInUseError(
                f"workdir {self.workdir} is in use by another training run "
                f"({_describe(holder)}); wait for it to finish or stop it, or give this run "
                "another --workdir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps(self._holder))
        file.flush()
        self._file = file

    # ------------------------------------------------------------------ object stores
    def _lease_path(self) -> str:
        return storage.join(self.workdir, LEASE_FILE)

    def _record(self) -> bytes:
        return json.dumps({**self._holder, "renewed": time.time()}).encode()

    def _take_lease(self) -> None:
        path = self._lease_path()
        if not conditional_write.atomic_conditional_writes(path):
            log.warning(
                "%s offers no conditional writes: the workdir lease is check-then-write there, "
                "so two runs started within one store round trip of each other can both take "
                "it; start one run per workdir (gs:// and local paths are atomic)", path,
            )  # fmt: skip
        for _ in range(_TAKE_ATTEMPTS):
            current = conditional_write.read_versioned(path)
            if current is None:
                token = conditional_write.create_exclusive(path, self._record())
            else:
                self._may_take_over(_parse(current.data))
                token = conditional_write.replace_if_unchanged(path, self._record(), current.token)
            if token is not None:
                self._token = token
                self._renewer = threading.Thread(target=self._keep_renewing, daemon=True)
                self._renewer.start()
                return
            # another run wrote the lease between this read and this write: read it again
        raise WorkdirInUseError(
            f"workdir {self.workdir}: its lease {path} changed {_TAKE_ATTEMPTS} times while "
            "this run tried to take it (other runs are starting on it); start one run per "
            "workdir"
        )

    def _may_take_over(self, lease: dict) -> None:
        """Returns if this run may replace `lease` (logging why); raises if it is held."""
        age = time.time() - float(lease.get("renewed", "-inf"))
        mine = self._holder["run_id"]
        if mine is not None and lease.get("run_id") == mine:
            log.warning(
                "taking over the lease of %s from the same run %r at once (%s, renewed %.0f s "
                "ago): a restart of that job, e.g. after a preemption",
                self.workdir, mine, _describe(lease), age,
            )  # fmt: skip
            return
        if age < -self.expiry_s:  # further ahead than any clock skew a lease tolerates
            log.warning(
                "taking over the lease of %s (%s): it says it was renewed %.0f s in the future, "
                "more than its %.0f s expiry; a clock that far off or a damaged record would "
                "otherwise hold the workdir forever",
                self.workdir, _describe(lease), -age, self.expiry_s,
            )  # fmt: skip
            return
        if age >= self.expiry_s:
            log.warning(
                "taking over the stale lease of %s (%s, not renewed for %.0f s)",
                self.workdir, _describe(lease), age,
            )  # fmt: skip
            return
        raise WorkdirInUseError(
            f"workdir {self.workdir} is leased by another training run ({_describe(lease)}; "
            f"renewed {age:.0f} s ago, expires after {self.expiry_s:.0f} s without renewal); "
            "wait for it to finish or stop it, or give this run another --workdir. A restart "
            f"of the same job takes over at once when both have the same {RUN_ID_ENV} (SLURM "
            f"job ids are read by themselves); this run's is {mine!r}"
        )

    def renew(self) -> None:
        """Rewrites the lease if it is still the version this run wrote; `LeaseLostError`
        naming the holder if another run wrote it since. A deleted lease (the workdir moved
        aside by --overwrite, or removed by hand) is created again, if nobody else did."""
        path = self._lease_path()
        token = conditional_write.replace_if_unchanged(path, self._record(), self._token)
        if token is None:
            current = conditional_write.read_versioned(path)
            if current is None:
                log.warning("the workdir lease %s was deleted while held; writing it again", path)
                token = conditional_write.create_exclusive(path, self._record())
            elif _parse(current.data).get("lease_id") == self._holder["lease_id"]:
                # this run's own write whose answer was lost (a timeout): adopt its version
                token = conditional_write.replace_if_unchanged(path, self._record(), current.token)
            if token is None:
                current = conditional_write.read_versioned(path)
                holder = _describe(_parse(current.data)) if current else "unknown"
                raise LeaseLostError(
                    f"workdir {self.workdir}: another training run ({holder}) took its lease "
                    f"{path} while this run (pid {os.getpid()} on {socket.gethostname()}) held "
                    "it; this run stops so that two runs do not write one workdir"
                )
        self._token = token

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except LeaseLostError as lost:
                log.error("%s", lost)
                with self._mutex:
                    if not self._stop.is_set():
                        self.lost = lost
                        self._on_lost(lost)
                return
            except Exception as error:  # a transient store error must not kill training
                log.warning("could not renew the workdir lease: %s", error)

    def release(self) -> None:
        with self._mutex:
            self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        if self._token is not None:
            token, self._token = self._token, None
            try:  # only the version this run wrote: never a lease another run took
                if self.lost is None:
                    conditional_write.delete_if_unchanged(self._lease_path(), token)
            except Exception as error:  # it expires by itself
                log.warning("could not remove the workdir lease: %s", error)
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None

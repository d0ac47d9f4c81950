"""One writer per workdir: a second training run on a workdir in use is refused at start.

Two runs on one workdir interleave checkpoints and truncate each other's ``metrics.jsonl``. On
a local disk the lock is ``<workdir>/run.lock`` held with `fcntl.flock`: the kernel releases
it when the holder exits, however it dies (kill -9 included), so there is nothing to clean up.
Object stores have no locks: there the holder keeps ``<workdir>/run.lease`` (host, pid, start
time) fresh every `LEASE_RENEW_S`, and a lease older than `LEASE_EXPIRY_S` belongs to a dead
run and is taken over with a warning.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time

from octo_like import storage

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
LEASE_FILE = "run.lease"
LEASE_RENEW_S = 60.0
LEASE_EXPIRY_S = 600.0


class WorkdirInUseError(RuntimeError):
    """Another run holds the workdir."""


def _holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


class WorkdirLock:
    """Context manager: holds `workdir` for this process (call on the main process only)."""

    def __init__(self, workdir: str, *, renew_s: float = LEASE_RENEW_S,
                 expiry_s: float = LEASE_EXPIRY_S):  # fmt: skip
        self.workdir = storage.absolute(workdir)
        self.renew_s, self.expiry_s = renew_s, expiry_s
        self._file = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._holder = _holder()

    def __enter__(self) -> WorkdirLock:
        storage.makedirs(self.workdir)
        if storage.has_scheme(self.workdir):
            self._take_lease()
        else:
            self._flock()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

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

    def _take_lease(self) -> None:
        path = self._lease_path()
        if storage.exists(path):
            try:
                lease = json.loads(storage.read_text(path))
                age = time.time() - float(lease["renewed"])
            except (ValueError, KeyError, TypeError):
                lease, age = {}, float("inf")
            if age < self.expiry_s:
                raise WorkdirInUseError(
                    f"workdir {self.workdir} is leased by another training run "
                    f"({_describe(lease)}; renewed {age:.0f} s ago, expires after "
                    f"{self.expiry_s:.0f} s without renewal); wait for it to finish or stop "
                    "it, or give this run another --workdir"
                )
            log.warning(
                "taking over the stale lease of %s (%s, not renewed for %.0f s)",
                self.workdir, _describe(lease), age,
            )  # fmt: skip
        self._renew()
        self._renewer = threading.Thread(target=self._keep_renewing, daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        storage.write_text(self._lease_path(), json.dumps({**self._holder, "renewed": time.time()}))

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._renew()
            except Exception as error:  # a transient store error must not kill training
                log.warning("could not renew the workdir lease: %s", error)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
            try:
                storage.remove(self._lease_path())
            except Exception as error:  # it expires by itself
                log.warning("could not remove the workdir lease: %s", error)
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None

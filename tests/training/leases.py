"""A workdir lease as another run writes it, and the lease as it stands: the lease tests
(tests/training/test_workdir_lease.py) and the failure drill's lease cases (tests/drill/lease.py)
both stage a preempted or competing run this way, on any store `octo_like.storage` reaches."""

from __future__ import annotations

import json
import time

from octo_like import conditional_write, storage
from octo_like.training.checkpoints.workdir_lock import LEASE_FILE


def read_lease(workdir: str) -> dict:
    """The lease record on `workdir` (holder host, pid, run id, last renewal)."""
    return json.loads(storage.read_text(storage.join(workdir, LEASE_FILE)))


def write_lease(workdir: str, attempts: int = 50, **holder) -> None:
    """Another run's lease on `workdir` (pid 4242 on host "elsewhere", renewed now unless
    `holder` says otherwise), written as that run would: a conditional create or replace.
    A replace that loses to the holder's own renewal (a live holder renews every 0.1 s in
    the tests) reads the lease again and retries, as a run taking a lease over does; a store
    that keeps refusing, or loses a create, still fails loudly."""
    path = storage.join(workdir, LEASE_FILE)
    record = json.dumps({"host": "elsewhere", "pid": 4242, "started": "then",
                         "renewed": time.time(), **holder}).encode()  # fmt: skip
    for _ in range(attempts):
        current = conditional_write.read_versioned(path)
        if current is None:
            assert conditional_write.create_exclusive(path, record), f"{path} appeared meanwhile"
            return
        if conditional_write.replace_if_unchanged(path, record, current.token):
            return
    raise AssertionError(f"{path} changed under each of {attempts} conditional replaces")

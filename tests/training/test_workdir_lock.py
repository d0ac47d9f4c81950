"""One writer per workdir: a second run is refused naming the holder; the lock dies with its
holder (kill -9 included) on local disks, and is a renewed lease on object stores."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import train
from octo_like import storage
from octo_like.training.checkpoints.workdir_lock import LEASE_FILE, WorkdirInUseError, WorkdirLock
from tests import memory_fs
from tests.conftest import REPO
from tests.training.test_train import debug_config

HOLD = """
import sys, time
from octo_like.training.checkpoints.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(workdir) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    in_use = pytest.raises(WorkdirInUseError, match=rf"pid {os.getpid()} on .*started")
    with WorkdirLock(str(tmp_path)), in_use:
        WorkdirLock(str(tmp_path)).__enter__()
    with WorkdirLock(str(tmp_path)):  # released on exit
        pass


def test_the_lock_dies_with_a_killed_holder(tmp_path):
    child = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(WorkdirInUseError, match=f"pid {child.pid}"):
            WorkdirLock(str(tmp_path)).__enter__()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with WorkdirLock(str(tmp_path)):  # nothing left to clean up
        pass


def test_a_training_run_refuses_a_workdir_in_use(tmp_path):
    """The finding: a second run on a workdir lost the first run's metrics; now it never
    starts (and writes nothing there)."""
    workdir = tmp_path / "run"
    child = hold_in_another_process(workdir)
    try:
        config = debug_config(str(tmp_path / "data"), str(tmp_path / "stats"))
        with pytest.raises(WorkdirInUseError, match="in use by another training run"):
            train.main(config, str(workdir))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert sorted(os.listdir(workdir)) == ["run.lock"]


def test_object_stores_get_a_lease_that_expires(caplog, monkeypatch):
    for name in ("OCTO_RUN_ID", "SLURM_JOB_ID"):  # two runs of one identity would take over
        monkeypatch.delenv(name, raising=False)
    memory_fs.register()
    workdir = f"{memory_fs.SCHEME}lease-{time.time_ns()}"
    with WorkdirLock(workdir, renew_s=0.05):
        lease = json.loads(storage.read_text(storage.join(workdir, LEASE_FILE)))
        assert lease["pid"] == os.getpid()
        time.sleep(0.2)
        renewed = json.loads(storage.read_text(storage.join(workdir, LEASE_FILE)))["renewed"]
        assert renewed > lease["renewed"]  # kept fresh while held
        with pytest.raises(WorkdirInUseError, match="leased by another training run"):
            WorkdirLock(workdir).__enter__()
    assert not storage.exists(storage.join(workdir, LEASE_FILE))  # released
    stale = {"host": "gone", "pid": 1, "started": "then", "renewed": time.time() - 3600}
    storage.write_text(storage.join(workdir, LEASE_FILE), json.dumps(stale))
    with caplog.at_level(logging.WARNING), WorkdirLock(workdir, expiry_s=600):
        assert "stale lease" in caplog.text and "pid 1 on gone" in caplog.text

"""The workdir lease on object stores (issue 40): taken by a conditional create, so of several
runs started together exactly one holds it; renewed only by its holder, and a run that lost it
stops by name; a restart of the same job (same run identity) takes it over at once.

The race runs in separate processes on a slow store shared through a local directory
(tests/slow_store.py: 50 ms a request, conditional writes atomic like GCS's generation
preconditions); nothing here imports jax in those processes."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time

import pytest

from octo_like import storage
from octo_like.training.checkpoints import workdir_lock
from octo_like.training.checkpoints.workdir_lock import (
    LEASE_FILE,
    LeaseLostError,
    WorkdirInUseError,
    WorkdirLock,
    run_identity,
)
from tests import memory_fs, slow_store
from tests.conftest import REPO
from tests.training.leases import read_lease, write_lease


@pytest.fixture(autouse=True)
def no_run_identity(monkeypatch):
    """Tests name run identities themselves; one from the machine running them (a SLURM job)
    would make every lock here the same run."""
    for name in ("OCTO_RUN_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def workdir():
    memory_fs.register()
    root = f"{memory_fs.SCHEME}lease-{time.time_ns()}"
    yield f"{root}/run"
    memory_fs.clear(root)


def test_one_winner_in_every_trial_of_a_race(tmp_path):
    """The finding: with 50 ms of store latency, two runs started 10 ms apart both took the
    lease in 10 of 10 trials (the old check-then-write lease still does, in this harness)."""
    outcomes = slow_store.race(str(tmp_path), trials=10, contenders=3, latency_s=0.05)
    for trial, results in enumerate(outcomes):
        assert results.count("won") == 1, (trial, results)
        for result in results:
            assert result == "won" or "leased by another training run (pid" in result, result


def test_the_race_has_two_winners_on_a_store_without_conditional_writes(tmp_path):
    """The same harness catches a check-then-write lease: what `slowcheck://` (no conditional
    writes, as on s3://) still is, and why the lease warns there."""
    outcomes = slow_store.race(
        str(tmp_path), trials=3, contenders=2, scheme=slow_store.CHECK_THEN_WRITE_SCHEME
    )
    assert any(results.count("won") == 2 for results in outcomes), outcomes


def test_a_store_without_conditional_writes_is_named_in_a_warning(tmp_path, caplog):
    slow_store.register(latency_s=0.0)
    atomic = f"{slow_store.SCHEME}{tmp_path}/atomic"
    with caplog.at_level(logging.WARNING), WorkdirLock(atomic):
        assert "conditional writes" not in caplog.text
    racy = f"{slow_store.CHECK_THEN_WRITE_SCHEME}{tmp_path}/racy"
    with caplog.at_level(logging.WARNING), WorkdirLock(racy):
        assert "offers no conditional writes" in caplog.text and "racy/run.lease" in caplog.text


def test_a_restart_of_the_same_run_takes_over_at_once(workdir, caplog):
    """A preempted run's lease, renewed a moment ago, refuses another run but not the same
    job restarted (same run identity, e.g. the launcher's job id)."""
    write_lease(workdir, run_id="job-7")
    with pytest.raises(WorkdirInUseError, match=r"pid 4242 on elsewhere.*run 'job-7'.*OCTO_RUN_ID"):
        WorkdirLock(workdir, run_id="job-8").__enter__()
    assert read_lease(workdir)["pid"] == 4242  # untouched
    with caplog.at_level(logging.WARNING), WorkdirLock(workdir, run_id="job-7"):
        assert read_lease(workdir)["pid"] == os.getpid()
        assert "same run 'job-7' at once" in caplog.text and "pid 4242" in caplog.text
    assert not storage.exists(storage.join(workdir, LEASE_FILE))  # released


def test_an_expired_lease_is_taken_over_with_a_warning(workdir, caplog):
    write_lease(workdir, run_id="job-7", renewed=time.time() - 30)
    with pytest.raises(WorkdirInUseError, match="renewed 30 s ago, expires after 60 s"):
        WorkdirLock(workdir, run_id="job-8", expiry_s=60).__enter__()
    with caplog.at_level(logging.WARNING), WorkdirLock(workdir, run_id="job-8", expiry_s=20):
        assert "stale lease" in caplog.text and "not renewed for 30 s" in caplog.text


def test_a_lease_renewed_in_the_far_future_expires(workdir, caplog):
    """Issue 69 item 5: "renewed -1000000000 s ago" held the workdir forever. A renewal up to
    one expiry ahead (clock skew between hosts) still holds it."""
    write_lease(workdir, run_id="job-7", renewed=time.time() + 30)
    with pytest.raises(WorkdirInUseError, match="renewed -30 s ago"):
        WorkdirLock(workdir, run_id="job-8", expiry_s=60).__enter__()
    write_lease(workdir, run_id="job-7", renewed=time.time() + 1e9)
    with caplog.at_level(logging.WARNING), WorkdirLock(workdir, run_id="job-8", expiry_s=60):
        assert "renewed 1000000000 s in the future" in caplog.text


def test_a_renewal_by_a_run_that_lost_the_lease_is_refused(workdir):
    lock = WorkdirLock(workdir, run_id="job-7", renew_s=3600).__enter__()
    before = read_lease(workdir)["renewed"]
    lock.renew()  # the holder renews
    assert read_lease(workdir)["renewed"] > before
    write_lease(workdir, run_id="job-9")  # another run took it (it expired, say)
    with pytest.raises(LeaseLostError, match=r"another training run \(pid 4242 on elsewhere"):
        lock.renew()
    lock.lost = LeaseLostError("lost")  # as the renewal thread records it
    lock.release()
    assert read_lease(workdir)["run_id"] == "job-9"  # the other run's lease stays


def test_a_taker_that_loses_to_the_holders_renewal_reads_again(workdir, monkeypatch):
    """CI at f07665f: the holder renewed between the staging helper's read and its conditional
    replace, and the helper gave up ("changed meanwhile"). A run taking a lease over reads
    again and retries; the holder's next renewal then stops it by name."""
    from octo_like import conditional_write

    lock = WorkdirLock(workdir, run_id="job-7", renew_s=3600).__enter__()
    read_versioned, renewed_between = conditional_write.read_versioned, []

    def read_then_holder_renews(path):
        current = read_versioned(path)
        if not renewed_between:
            renewed_between.append(lock.renew())  # the holder's renewal lands here, once
        return current

    monkeypatch.setattr(conditional_write, "read_versioned", read_then_holder_renews)
    write_lease(workdir, run_id="job-9")
    monkeypatch.undo()
    assert renewed_between and read_lease(workdir)["run_id"] == "job-9"
    with pytest.raises(LeaseLostError, match="another training run"):
        lock.renew()
    lock.lost = LeaseLostError("lost")
    lock.release()


def test_a_deleted_lease_is_written_again_by_its_holder(workdir, caplog):
    """--overwrite moves the workdir aside while the lease is held; a renewal in between
    writes it again instead of stopping the run."""
    with WorkdirLock(workdir, renew_s=3600) as lock:
        storage.remove(storage.join(workdir, LEASE_FILE))
        with caplog.at_level(logging.WARNING):
            lock.renew()
        assert "deleted while held" in caplog.text and read_lease(workdir)["pid"] == os.getpid()


HOLD = """
import sys, time
from tests import slow_store
slow_store.register(0.0)
from octo_like.training.checkpoints.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1], renew_s=0.1, run_id="job-1"):
    print("held", flush=True)
    for step in range(600):  # a training loop: back in Python between steps
        time.sleep(0.1)
"""


def test_a_run_whose_lease_was_taken_stops_by_name(tmp_path):
    """A run that lives on after another took its lease (a preempted host that comes back,
    a restart given the same identity by mistake) stops at its next renewal."""
    slow_store.register(latency_s=0.0)
    workdir = f"{slow_store.SCHEME}{tmp_path}/run"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, workdir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        first = read_lease(workdir)["renewed"]
        time.sleep(0.5)
        assert read_lease(workdir)["renewed"] > first and child.poll() is None  # renewed, running
        write_lease(workdir, run_id="job-2")
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode != 0
    assert "LeaseLostError" in stderr and "took its lease" in stderr, stderr[-2000:]
    assert read_lease(workdir)["run_id"] == "job-2"


def test_the_run_identity_comes_from_the_launchers():
    assert run_identity({"OCTO_RUN_ID": "gke-jobset/octo", "SLURM_JOB_ID": "1"}) == (
        "gke-jobset/octo"
    )
    slurm = {"SLURM_CLUSTER_NAME": "c", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}
    assert run_identity(slurm) == "slurm/c/77/0"  # kept by --requeue
    assert run_identity({}) is None
    assert workdir_lock.RUN_ID_ENV == "OCTO_RUN_ID"


def test_the_launchers_give_a_restarted_job_its_identity():
    from octo_like.launch import gke, recipes

    assert recipes.RUN_ID_ENV == workdir_lock.RUN_ID_ENV
    train_args = ["--config", "configs/pretrain.py:debug", "--workdir", "gs://b/runs/x"]
    manifest = gke.jobset(gke.GkeSlice("octo-x", "i"), train_args)
    (container,) = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["env"] == [{"name": "OCTO_RUN_ID", "value": "gke-jobset/octo-x"}]
    command = recipes.start_command(recipes.TpuVm("v4-8", "z"), train_args)
    remote = next(c for c in command if c.startswith("--command=")).removeprefix("--command=")
    assert "OCTO_RUN_ID=tpu-vm/z/v4-8" in shlex.split(remote)

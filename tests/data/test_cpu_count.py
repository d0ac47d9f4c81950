"""Input threads follow the CPUs this process may use (affinity, cgroup quota), not the
machine's core count."""

from __future__ import annotations

import os

import pytest

from octo_like.data.dataset import Parallelism, usable_cpu_count


@pytest.mark.parametrize(
    "cpu_max, expected",
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000", 1)],
)
def test_cgroup_v2_quota_caps_the_count(tmp_path, cpu_max, expected):
    (tmp_path / "cpu.max").write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    want = affinity if expected is None else min(affinity, expected)
    assert usable_cpu_count(str(tmp_path)) == want


def test_cgroup_v1_quota_and_no_cgroup(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpu_count(str(tmp_path)) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpu_count(str(tmp_path)) == len(os.sched_getaffinity(0))
    assert usable_cpu_count(str(tmp_path / "missing")) == len(os.sched_getaffinity(0))


def test_affinity_limits_the_input_threads(monkeypatch):
    """A process pinned to 8 CPUs of a 200-core machine gets 8 CPUs' worth of threads."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 200)
    cpus = usable_cpu_count("/nonexistent")  # no cgroup limit here: the affinity decides
    assert cpus == 8
    threads = Parallelism(cpu_count=cpus)
    assert (threads.read, threads.trajectory, threads.frame) == (2, 2, 4)

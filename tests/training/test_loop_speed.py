"""The loop's speed machinery, checked by behaviour (never by timings): device prefetch in a
background thread, metrics fetched once per log window, data-wait logged, the persistent
compilation cache and the profiler window."""

from __future__ import annotations

import os
import pathlib
import threading
import time

import jax
import pytest

import train
from octo_like.training.checkpoints.checkpoint import Checkpointer
from octo_like.training.config import parse_train_config
from octo_like.training.run.metrics import read_jsonl
from octo_like.training.run.prefetch import DevicePrefetcher
from octo_like.training.run.profiling import ProfileWindow, cache_directory, parse_profile_steps
from tests.training.test_train import debug_config


def test_prefetcher_keeps_order_and_runs_at_most_depth_ahead():
    produced = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    prefetcher = DevicePrefetcher(source(), lambda x: x * 10, depth=2, first_batches=(-1,))
    try:
        time.sleep(0.3)  # let the thread fill the queue
        # 2 queued + 1 built and waiting for room: the source is not drained ahead of use.
        assert len(produced) <= 3
        got = [prefetcher.next_batch()[0] for _ in range(11)]
        assert got == [-10, *range(0, 100, 10)]
        with pytest.raises(StopIteration):
            prefetcher.next_batch()
        with pytest.raises(StopIteration):  # and it stays exhausted
            prefetcher.next_batch()
    finally:
        prefetcher.close()


def test_prefetcher_hands_the_threads_error_to_the_caller():
    def source():
        yield 1
        raise ValueError("NaN in action of episode 3 of dataset toy")

    prefetcher = DevicePrefetcher(source(), lambda x: x, depth=2)
    assert prefetcher.next_batch()[0] == 1
    with pytest.raises(ValueError, match="episode 3 of dataset toy"):
        prefetcher.next_batch()
    with pytest.raises(ValueError, match="episode 3"):  # again, rather than waiting forever
        prefetcher.next_batch()
    prefetcher.close()


def test_closing_a_prefetcher_blocked_on_a_full_queue_stops_its_thread():
    def endless():
        while True:
            yield 0

    before = threading.active_count()
    prefetcher = DevicePrefetcher(endless(), lambda x: x, depth=1)
    time.sleep(0.2)
    prefetcher.close()
    assert threading.active_count() == before


def test_profile_steps_and_cache_settings_are_validated(tmp_path):
    assert parse_profile_steps("") is None
    assert parse_profile_steps("10,15") == (10, 15)
    for bad in ("10", "15,10", "a,b", "1,2,3", "-1,3"):
        with pytest.raises(ValueError, match="profile_steps"):
            parse_profile_steps(bad)
    assert cache_directory("", "/w") is None
    assert cache_directory("workdir", "/w") == "/w/compilation_cache"
    assert cache_directory("/shared/xla", "/w") == "/shared/xla"
    config = debug_config(str(tmp_path / "d"), str(tmp_path / "s"), profile_steps="3,2")
    with pytest.raises(ValueError, match="START < END"):
        parse_train_config(config, str(tmp_path / "run"))


def test_the_profile_window_waits_for_background_saves_before_it_stops(tmp_path, monkeypatch):
    """jax's Python tracer crashed (SIGSEGV in stop_trace) when an async save's thread exited
    while the trace stopped: the window quiesces first (the loop hands it the checkpointer)."""
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: events.append("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
    window = ProfileWindow((1, 3), str(tmp_path), quiesce=lambda: events.append("quiesce"))
    for step in range(5):
        window.after_step(step)
        events.append(step)
    assert events == [0, "start", 1, 2, "quiesce", "stop", 3, 4]


@pytest.mark.slow
def test_a_run_prefetches_logs_data_wait_caches_compiles_and_profiles(
    shared_data, tmp_path, monkeypatch
):
    """4 steps, log_every=2, profile steps 2-3: the metrics leave the devices twice (one list
    per window), each window logs step and data-wait time, the trace and cache are on disk."""
    fetched_windows = []
    real_device_get = jax.device_get

    def spy(tree):
        if isinstance(tree, list):
            fetched_windows.append(len(tree))
        return real_device_get(tree)

    monkeypatch.setattr(jax, "device_get", spy)
    workdir = tmp_path / "run"
    cache = tmp_path / "xla_cache"
    config = debug_config(
        shared_data,
        str(tmp_path / "stats"),
        log_every=2,
        profile_steps="1,3",
        compilation_cache=str(cache),
        val_split="",
    )
    result = train.main(config, str(workdir))
    assert result.final_step == 4
    assert fetched_windows == [2, 2]
    train_rows = [r for r in read_jsonl(str(workdir / "metrics.jsonl")) if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4]
    for row in train_rows:
        assert row["perf/step_s"] > 0 and 0 <= row["perf/data_wait_s"] <= row["perf/step_s"]
    traces = list(pathlib.Path(workdir, "tensorboard", "plugins", "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert any(os.scandir(cache)), "the train step was written to the compilation cache"


@pytest.mark.slow
def test_changing_how_a_run_executes_does_not_block_its_resume(shared_data, tmp_path, monkeypatch):
    """profile_steps, compilation_cache, prefetch_batches and platform are not the run's
    identity: a restart that adds a profiler window resumes instead of being refused. Its
    window is still open when it stops at step 2: the teardown stops the trace only after the
    checkpointer has finished the last save (its threads gone; see ProfileWindow)."""
    workdir = str(tmp_path / "run")
    stats = str(tmp_path / "stats")
    first = train.main(debug_config(shared_data, stats), workdir, stop_at_step=1)
    assert first.final_step == 1
    changed = debug_config(
        shared_data, stats, profile_steps="2,3", prefetch_batches=3, compilation_cache=""
    )
    events, close, stop_trace = [], Checkpointer.close, jax.profiler.stop_trace
    monkeypatch.setattr(Checkpointer, "close", lambda self: close(self) or events.append("closed"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop") or stop_trace())
    second = train.main(changed, workdir, stop_at_step=2)
    assert (second.start_step, second.final_step) == (1, 2)
    assert events == ["closed", "stop"]
    with pytest.raises(ValueError, match="optimizer.learning_rate"):
        train.main(debug_config(shared_data, stats, **{"optimizer.learning_rate": 1.0}), workdir)


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("synthetic"))


def test_the_runtime_line_names_the_host_cpus_a_speed_depends_on(monkeypatch):
    from octo_like.training.parallel import runtime

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 5})
    host = runtime.describe_host_cpus()
    assert host.startswith("3 CPUs")
    assert runtime.describe_runtime().endswith(f"; host {host}")


@pytest.mark.slow
def test_the_run_seed_decides_the_data_stream_not_only_the_initializers(
    shared_data, tmp_path, monkeypatch
):
    """Two fine-tuning seeds from one checkpoint (nothing new to initialize) were bit-identical
    runs: the pipeline was seeded by data.seed alone (found by the issue-33 benchmark)."""
    from octo_like.training.run import pipeline_thread, run_data

    seeds = []
    real = pipeline_thread.make_pipeline  # the training pipeline is built in its own thread
    monkeypatch.setattr(
        pipeline_thread,
        "make_pipeline",
        lambda data, *a, **k: (data.train and seeds.append(data.seed)) or real(data, *a, **k),
    )
    stats = str(tmp_path / "stats")
    for seed in (0, 3):
        train.main(debug_config(shared_data, stats, seed=seed), str(tmp_path / f"s{seed}"),
                   stop_at_step=1)  # fmt: skip
    assert seeds == [0, 3 * 1_000_003]
    resumed = [run_data.data_stream_seed(debug_config_typed(seed), step) for seed, step in
               ((0, 0), (0, 5), (1, 0), (1, 5))]  # fmt: skip
    assert len(set(resumed)) == 4 and resumed[1] == 5


def debug_config_typed(seed: int):
    import types

    return types.SimpleNamespace(seed=seed, data=types.SimpleNamespace(seed=0))

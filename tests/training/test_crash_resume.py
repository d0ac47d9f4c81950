"""Crash-safe resume: a process SIGKILLed during or right after checkpoint saves, whose newest
step is then corrupted, resumes from the newest step that was verified when it was saved, at
every kill timing; nothing is deleted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from octo_like.model.checkpoint_integrity import CHECKSUMS_FILE
from octo_like.model.checkpoint_layout import FINALIZED_MARKER
from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer
from tests.conftest import REPO
from tests.training.checkpoint_kill_child import state_at

CHILD = REPO / "tests" / "training" / "checkpoint_kill_child.py"


def kill_during_saves(directory, after_saved: int, delay: float) -> None:
    """Starts the child and SIGKILLs it `delay` s after it printed ``saved <after_saved>``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 300
        for line in child.stdout:
            if line.strip() == f"saved {after_saved}":
                break
            assert time.monotonic() < deadline, "the child saves too slowly"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)  # JAX ignores SIGTERM; a crash is a SIGKILL anyway
        child.wait(timeout=30)


def corrupt_newest_finished_step(directory) -> int:
    steps = sorted(
        int(p.name) for p in directory.iterdir()
        if p.name.isdigit() and (p / FINALIZED_MARKER).exists()
    )  # fmt: skip
    newest = steps[-1]
    files = [p for p in (directory / str(newest) / "train_state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 64)):
        data[i] ^= 0xFF
    biggest.write_bytes(bytes(data))
    return newest


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5, 1.5])
def test_a_killed_run_with_a_corrupt_newest_step_resumes_from_a_verified_one(tmp_path, delay):
    directory = tmp_path / "checkpoints"
    kill_during_saves(directory, after_saved=3, delay=delay)
    corrupted = corrupt_newest_finished_step(directory)
    with Checkpointer(str(directory), CheckpointConfig(save_every=1, keep_last=50)) as ckpt:
        step = ckpt.resume_step()
        assert step is not None and step < corrupted
        assert (directory / str(step) / CHECKSUMS_FILE).exists()
        restored = ckpt.restore(step, state_at(step))
    assert int(restored["step"]) == step
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state_at(step)["w"]))
    aside = [p.name for p in directory.iterdir() if p.name.startswith(f"{corrupted}.")]
    assert aside and any(aside_name.startswith(f"{corrupted}.corrupt-") for aside_name in aside)
    # Every step that stays in place is one a rerun can trust.
    for path in directory.iterdir():
        if path.name.isdigit() and (path / FINALIZED_MARKER).exists():
            assert (path / CHECKSUMS_FILE).exists(), path

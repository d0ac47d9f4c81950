"""A checkpoint save that fills the disk ends in one named error (the disk is full, how much is
free, which earlier steps are intact), the process exits cleanly, and the earlier steps still
resume. Needs a small tmpfs (root; CI runs as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer
from tests.conftest import REPO
from tests.training.checkpoint_kill_child import state_at

SAVE_UNTIL_FULL = """
import sys
from octo_like.host import exit_at_once_on
from octo_like.training.checkpoints.checkpoint import CheckpointSaveError
from tests.training.checkpoint_kill_child import main
with exit_at_once_on(CheckpointSaveError):  # as train.py and finetune.py run
    main(sys.argv[1])
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB filesystem: room for the first (compressed) steps of `state_at`, not for all."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_named_and_the_process_exits_cleanly(small_disk):
    directory = small_disk / "checkpoints"
    child = subprocess.run(
        [sys.executable, "-c", SAVE_UNTIL_FULL, str(directory)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert child.returncode != 0
    last = child.stderr.strip().splitlines()[-1]
    error = "octo_like.training.checkpoints.checkpoint.CheckpointSaveError"
    assert last.startswith(f"{error}: saving checkpoint")
    assert "the disk is full (" in last and "MiB free" in last and "rerun the same command" in last
    assert "ImportError" not in child.stderr
    # the named error alone: no traceback, no orbax write errors, no closed-loop reports
    assert "Traceback" not in child.stderr and "Event loop is closed" not in child.stderr
    assert "RESOURCE_EXHAUSTED" not in child.stderr.replace(last, "")
    saved = [int(line.split()[1]) for line in child.stdout.splitlines()]
    assert saved, child.stdout  # at least one step went through before the disk filled
    with Checkpointer(str(directory), CheckpointConfig(save_every=1)) as checkpointer:
        step = checkpointer.resume_step()
        assert step is not None and step in saved
        restored = checkpointer.restore(step, state_at(step))
    assert int(restored["step"]) == step

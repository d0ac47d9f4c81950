"""Logs a cluster can read: without a terminal, a plain line per `log_every` (step, loss,
validation loss, samples/s, data wait, ETA) instead of a carriage-return bar, and no
third-party INFO chatter in the run's console."""

from __future__ import annotations

import io
import os
import pathlib
import re
import subprocess
import sys

import pytest

from octo_like.training.run.progress import Progress
from tests import xla_cache
from tests.conftest import REPO


def test_a_log_file_gets_plain_lines_with_rates_and_eta():
    stream = io.StringIO()  # not a terminal
    progress = Progress(10, file=stream, mininterval=0)
    for step in range(1, 5):
        progress.update(step, samples=8, data_wait_s=0.01, step_s=0.09, loss=1.0)
    progress.log(4, {"loss": 0.5})
    progress.log(4, {"val_loss": 0.75}, rates=False)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()  # no bar drawn
    plain = r"step 4/10 loss 0\.5 samples/s [\d.]+ data_wait \d+% eta 0:00:\d\d"
    assert re.fullmatch(plain, lines[0]), lines
    assert lines[1] == "step 4/10 val_loss 0.75"


def test_a_terminal_gets_the_bar_and_no_plain_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(10, file=stream, mininterval=0)
    progress.update(1, samples=8, step_s=0.1, loss=1.0)
    progress.log(1, {"loss": 1.0})
    progress.close()
    assert "step 1/10 loss" not in stream.getvalue() and "samples/s=" in stream.getvalue()


@pytest.mark.slow
def test_a_run_without_a_terminal_logs_plain_lines_and_only_its_own_info(tmp_path):
    done = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/pretrain.py:debug",
         "--workdir", str(tmp_path / "run"), "--config.num_steps=4", "--config.log_every=2",
         f"--config.compilation_cache={xla_cache.directory()}"],  # the session's programs
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^step 2/4 loss [\d.]+ samples/s .* eta ", done.stderr, re.M)
    assert re.search(r"^step 4/4 val_loss [\d.]+$", done.stderr, re.M)
    own = {p.name for p in pathlib.Path(REPO, "octo_like").rglob("*.py")} | {"train.py"}
    # Python loggers' INFO lines ("I1125 08:25:07.46 140224 workdir.py:79] ..."); TensorFlow's
    # C++ start-up note (port.cc) is printed before any log level applies.
    sources = set(re.findall(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+\.py):\d+\]", done.stderr, re.M))
    assert sources and sources <= own, sources - own  # e.g. orbax's checkpoint_manager.py

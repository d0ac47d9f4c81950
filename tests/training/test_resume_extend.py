"""A finished run can be extended and re-tuned on resume: num_steps, the logging, evaluation
and checkpoint cadences and the loggers may change; what the run trains may not. With a new
num_steps the learning-rate schedule is rebuilt for the new length and the step count goes
on, so from the resumed step the logged rate follows the new schedule."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import pytest

import train
from octo_like.training.config import parse_train_config
from octo_like.training.optim.optimizer import OptimizerConfig, loop_learning_rate, schedule_change
from octo_like.training.run.metrics import read_jsonl
from tests.training.test_train import debug_config, shared_data  # noqa: F401  (fixture)


def _train_rows(workdir: str) -> dict[int, dict]:
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return {r["step"]: r for r in rows if r.get("split", "train") == "train"}


def _jumps(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING and "learning-rate schedule" in r.getMessage()
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_extends_num_steps_and_changes_cadences(shared_data, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    workdir = str(tmp_path / "run")
    stats = str(tmp_path / "stats")
    short = {"num_steps": 4, "log_every": 1, "eval_every": 4, "checkpoint.save_every": 2}
    first = train.main(debug_config(shared_data, stats, **short), workdir)
    assert (first.start_step, first.final_step) == (0, 4)
    assert not _jumps(caplog)

    longer = {"num_steps": 8, "log_every": 2, "eval_every": 8, "checkpoint.save_every": 4}
    config = debug_config(shared_data, stats, **longer)
    second = train.main(config, workdir)
    assert (second.start_step, second.final_step) == (4, 8)
    rows = _train_rows(workdir)
    assert sorted(rows) == [1, 2, 3, 4, 6, 8]  # the new log cadence from the resumed step
    with open(os.path.join(workdir, "config.json")) as file:
        recorded = json.load(file)
    assert recorded["num_steps"] == 8 and recorded["checkpoint"]["save_every"] == 4

    optimizer = parse_train_config(config, workdir).optimizer
    old, new = loop_learning_rate(optimizer, 4), loop_learning_rate(optimizer, 8)
    # which step index the logged rate belongs to, read off the first run
    offset = next(o for o in (-1, 0) if all(
        np.isclose(rows[s]["learning_rate"], float(old(s + o)), rtol=1e-5) for s in (1, 2, 3, 4)
    ))  # fmt: skip
    for s in (6, 8):  # a logged value is the mean over its log window (2 steps now)
        expected = np.mean([float(new(k + offset)) for k in (s - 1, s)])
        assert np.isclose(rows[s]["learning_rate"], expected, rtol=1e-5)
    assert not np.isclose(float(new(6 + offset)), float(old(min(6 + offset, 4))), rtol=1e-3)
    # The jump is a WARNING naming the saved run's last logged rate and the resumed run's first.
    (jump,) = _jumps(caplog)
    last_saved, first_resumed = rows[4]["learning_rate"], float(new(4 + 1 + offset))
    assert f"from {last_saved:.3g} (step 4" in jump and f"to {first_resumed:.3g} (step 5)" in jump
    assert "num_steps changed from 4 to 8" in jump and "optimizer.decay_steps=4" in jump


def test_the_schedule_change_warning_only_when_the_rate_changes():
    cosine = OptimizerConfig(learning_rate=3e-4, schedule="warmup_cosine", warmup_steps=1)
    text = schedule_change(cosine, 4, 8, 4)
    assert text.startswith("num_steps changed from 4 to 8") and "7.5e-05" in text
    assert "0.000183" in text  # the figures of issue 40: 7.5e-5 -> 1.83e-4
    assert schedule_change(cosine, 4, 4, 4) is None  # same length: a plain resume
    kept = dataclasses.replace(cosine, decay_steps=4)  # the documented way to keep it
    assert schedule_change(kept, 4, 8, 4) is None
    assert schedule_change(dataclasses.replace(cosine, schedule="rsqrt"), 4, 8, 4) is None


@pytest.mark.slow
def test_what_the_run_trains_still_cannot_change_on_resume(shared_data, tmp_path):  # noqa: F811
    workdir = str(tmp_path / "run")
    stats = str(tmp_path / "stats")
    train.main(debug_config(shared_data, stats, num_steps=2), workdir)
    changed = debug_config(shared_data, stats, num_steps=4, **{"optimizer.learning_rate": 1e-2})
    with pytest.raises(ValueError, match="optimizer.learning_rate"):
        train.main(changed, workdir)

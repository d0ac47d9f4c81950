"""The convergence check (issue 70, item 2): the quick preset's run at seed 0 falls inside the
committed band (configs/convergence_reference/quick.json, measured over 10 seeds by
`scripts/convergence.py measure`), and the band logic flags a curve that leaves it, naming the
points and values. docs/results.md ("Convergence check") shows which regressions the band
catches, measured."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
from scipy import stats

from octo_like.training.benchmarks import convergence
from octo_like.training.benchmarks.convergence import (
    Reference,
    check_curve,
    curve_from_metrics,
    describe,
    measure_reference,
)
from tests import xla_cache

REPO = pathlib.Path(__file__).resolve().parents[2]


def rows(losses: dict[int, float], val: dict[str, float]) -> list[dict]:
    train = [{"step": s, "split": "train", "loss": v} for s, v in losses.items()]
    return [*train, {"step": max(losses), "split": "val", **val}]


def test_a_curve_averages_each_window_and_takes_the_final_validation():
    curve = curve_from_metrics(
        rows({1: 4.0, 2: 2.0, 3: 1.0, 4: 3.0}, {"loss": 0.5, "sampled_mse": 0.25}),
        num_steps=4, window=2,
    )  # fmt: skip
    assert curve == {
        "train_loss@2": 3.0, "train_loss@4": 2.0, "val_loss": 0.5, "val_sampled_mse": 0.25,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"no training loss logged in steps \(2, 4\]"):
        curve_from_metrics(rows({1: 1.0, 2: 1.0}, {"loss": 1, "sampled_mse": 1}), 4, 2)
    with pytest.raises(ValueError, match="no validation 'sampled_mse' at step 2"):
        curve_from_metrics(rows({1: 1.0, 2: 1.0}, {"loss": 1}), 2, 1)
    with pytest.raises(ValueError, match="non-finite curve points"):
        curve_from_metrics(rows({1: math.nan}, {"loss": 1, "sampled_mse": 1}), 1, 1)


def test_the_band_is_a_corrected_prediction_interval_and_flags_a_curve_outside():
    curves = {seed: {"a": 1.0 + 0.1 * seed, "b": 2.0} for seed in range(5)}
    reference = measure_reference("quick", "abc", "cpu", curves, alpha=0.05, reason="test")
    k = stats.t.ppf(1 - 0.05 / 4, 4) * math.sqrt(1.2)  # 2 points, 5 seeds
    assert reference.multiplier == pytest.approx(k)
    sd = stats.tstd([1.0, 1.1, 1.2, 1.3, 1.4])
    assert reference.bands["a"].high == pytest.approx(1.2 + k * sd)
    assert reference.bands["b"].low == reference.bands["b"].high == 2.0  # no spread: exact

    again = Reference.from_json(reference.to_json(), "here")  # the file, through its reader
    assert again == reference
    unchanged = check_curve(curves[3], 3, again)
    assert unchanged.passed and unchanged.identical_to_seed
    assert "bit-identical" in describe(curves[3], unchanged, again).splitlines()[-1]
    moved = {"a": 1.2 + 1.01 * k * sd, "b": 2.0}
    verdict = check_curve(moved, 0, again)
    assert not verdict.passed and set(verdict.outside) == {"a"}
    assert describe(moved, verdict, again).splitlines()[-1].startswith("FAIL: 1 point(s)")
    with pytest.raises(ValueError, match="not the reference's"):
        check_curve({"a": 1.0}, 0, again)


@pytest.mark.slow
def test_the_quick_run_falls_inside_its_committed_band():
    """~40 s: the quick preset trained at seed 0 and checked against the committed reference,
    as `python scripts/convergence.py check --preset quick` runs it. Its own process keeps
    XLA's default optimization: the tests' level 0 (tests/xla_flags.py) compiles faster but
    ran these 180 steps at twice the CPU time (101 CPU-s against 51)."""
    path = REPO / "configs" / "convergence_reference" / "quick.json"
    reference = Reference.from_json(path.read_text(), str(path))
    assert set(reference.curves) == set(range(10)) and reference.alpha == 0.05
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "scripts/convergence.py", "check", "--preset", "quick", "--seed", "0",
         "--compilation_cache", xla_cache.directory()],
        cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [
        line.split() for line in done.stdout.splitlines() if line.startswith(("train_", "val_"))
    ]
    assert [row[0] for row in table] == list(reference.bands)
    for name, value, low, high, _ in table:
        assert float(low) <= float(value) <= float(high), name
    verdict = done.stdout.splitlines()[-1]
    assert verdict.startswith("PASS: ") and json.loads(path.read_text())["preset"] == "quick"
    assert convergence.FORMAT == 1

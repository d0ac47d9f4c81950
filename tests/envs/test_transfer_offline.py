"""Issue 67's correlation of closed-loop success with offline numbers (`transfer_offline`), on
hand-made arm results as the benchmark saves them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from octo_like.envs.transfer.plan import Arm, ArmResult, Target
from octo_like.envs.transfer.transfer_offline import offline_at, offline_correlations, spearman


def saved_arm(successes: int, episodes: int = 10, **offline) -> dict:
    """An arm's saved JSON, as far as the correlation reads it (two tasks)."""
    half = successes // 2
    per_task = {
        "reach": [half, episodes // 2],
        "push": [successes - half, episodes - episodes // 2],
    }
    return {"per_task": per_task, "offline": {"step": 600, **offline} if offline else None}


def test_a_metric_that_orders_arms_as_success_does_has_rho_one_and_a_loss_minus_one():
    arms = [saved_arm(s, accuracy=s / 20, loss=1.0 / (1 + s)) for s in (2, 9, 4, 7, 0)]
    table = offline_correlations(arms, metrics=("accuracy", "loss"))
    accuracy = table["accuracy"]
    assert (accuracy["rho"], accuracy["ci95"], accuracy["n"], accuracy["skipped"]) == (
        1.0, [1.0, 1.0], 5, 0
    )  # fmt: skip
    assert accuracy["note"] == "2 of 2000 resamples constant: left out"  # one arm drawn 5 times
    assert table["loss"]["rho"] == -1.0 and table["loss"]["ci95"] == [-1.0, -1.0]


def test_a_constant_metric_or_constant_success_has_no_rho_and_says_why():
    constant = offline_correlations([saved_arm(s, sampled_mse=3.0) for s in (1, 5, 8)])
    assert constant["sampled_mse"] == {
        "rho": None, "ci95": None, "n": 3, "skipped": 0,
        "note": "undefined: the metric is the same for every arm",
    }  # fmt: skip
    same_success = spearman([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert same_success["rho"] is None and "success is the same" in same_success["note"]
    assert spearman([0.1, 0.9], [1.0, 2.0])["note"] == "undefined: fewer than 3 arms"


def test_ties_take_average_ranks_as_scipys_spearman_does():
    success = [0.1, 0.2, 0.2, 0.5, 0.5, 0.9]
    metric = [1.0, 3.0, 2.0, 2.0, 5.0, 5.0]
    expected = stats.spearmanr(success, metric).statistic
    assert spearman(success, metric)["rho"] == pytest.approx(expected, abs=1e-4)
    assert spearman([0.0, 0.5, 0.5, 1.0], [1.0, 2.0, 2.0, 3.0])["rho"] == 1.0  # tied together


def test_the_bootstrap_interval_holds_the_estimate_and_repeats_with_its_seed():
    rng = np.random.default_rng(3)
    success = rng.uniform(0, 1, 20)
    metric = success + rng.normal(0, 0.3, 20)
    c = spearman(success, metric)
    low, high = c["ci95"]
    assert -1 <= low < c["rho"] < high <= 1 and c["n"] == 20
    assert c["rho"] == pytest.approx(stats.spearmanr(success, metric).statistic, abs=1e-4)
    assert spearman(success, metric) == c and spearman(success, metric, seed=1) != c
    few = spearman([0.1, 0.2, 0.3], [1.0, 3.0, 2.0])  # some resamples draw one arm thrice
    assert few["ci95"] is not None and "resamples constant: left out" in few["note"]


def test_arms_lacking_a_metric_are_skipped_and_counted():
    arms = [saved_arm(s, loss=1.0 - s / 10, sampled_mse=float(s)) for s in (1, 4, 6, 8)]
    arms += [
        saved_arm(5),  # offline: null (no validation entry at its step)
        saved_arm(3, loss=0.5),  # no sampled_mse (an action space it does not fit)
        saved_arm(2, sampled_mse=math.nan, loss=0.2),  # not a number
        {"per_task": {"reach": [0, 0]}, "offline": {"loss": 0.1}},  # no episodes
    ]
    target = Target("test", "front", ("reach",))
    arms.append(ArmResult(Arm(target, "full", 0, 10), {"reach": (7, 10)}, offline={"loss": 0.25}))
    table = offline_correlations(arms)
    assert (table["loss"]["n"], table["loss"]["skipped"]) == (7, 2)
    assert (table["sampled_mse"]["n"], table["sampled_mse"]["skipped"]) == (4, 5)
    assert table["sampled_mse"]["rho"] == 1.0
    assert (table["xyz_angle"]["n"], table["xyz_angle"]["skipped"]) == (0, 9)
    assert table["xyz_angle"]["rho"] is None


def test_the_offline_numbers_are_the_evaluated_steps_validation_and_training_loss():
    entries = [
        {"step": 300, "split": "val", "loss": 0.9, "sampled_mse": 4.0},
        {"step": 300, "split": "val", "loss": 0.8, "sampled_mse": 3.0},  # a resumed run's
        {"step": 300, "split": "train", "loss": 0.5, "grad_norm": 2.0},
        {"step": 300, "split": "sim", "success": 0.5},
        {"step": 600, "split": "val", "loss": 0.7, "xyz_angle": 0.2, "mse": 0.7},
    ]
    assert offline_at(entries, 300) == {
        "step": 300, "loss": 0.8, "sampled_mse": 3.0, "train_loss": 0.5
    }  # fmt: skip
    assert offline_at(entries, 600) == {"step": 600, "loss": 0.7, "xyz_angle": 0.2}
    assert offline_at(entries, 150) is None and offline_at([], 600) is None

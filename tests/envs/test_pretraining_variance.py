"""The statistics over several pretraining runs (`pretraining_variance`) against values computed by
hand and by scipy, and the pooled report (`pretraining_report`) on constructed arm results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from octo_like.envs.transfer.paired import paired_gap
from octo_like.envs.transfer.plan import Arm, ArmResult, Target
from octo_like.envs.transfer.pretraining_report import RunResults, pooled_rows, write_pooled_report
from octo_like.envs.transfer.pretraining_variance import (
    balanced_grid,
    cluster_bootstrap,
    pooled_gap,
    variance_components,
)
from octo_like.envs.transfer.transfer_benchmark import parse_args

HERE = {"commit": "0123456789ab", "cpu": "AMD EPYC, family 25 model 17"}
TARGET = Target("wrist", "wrist", ("reach",))


def test_no_difference_between_run_means_gives_no_pretraining_variance():
    # Every run's seeds average 0.3: MS_between = 0, and the within-run spread is all there is.
    rates = np.array([[0.2, 0.4], [0.4, 0.2], [0.3, 0.3]])
    anova = variance_components(rates, np.full((3, 2), 10))
    assert anova.ms_between == pytest.approx(0.0, abs=1e-15)
    # (0.01 + 0.01) + (0.01 + 0.01) + 0, over 3 runs x (2 - 1) df
    assert anova.ms_within == pytest.approx(0.04 / 3)
    assert anova.sigma2_pretraining == 0.0  # max(0, negative): clipped, not negative
    assert anova.sigma2_finetuning == pytest.approx(0.04 / 3) and anova.dominant == "fine-tuning"


def test_known_run_means_reproduce_the_mean_squares_by_hand():
    rates = np.array([[0.1, 0.3], [0.5, 0.7], [0.2, 0.4]])  # run means 0.2, 0.6, 0.3
    episodes = np.array([[10, 10], [10, 10], [20, 20]])
    anova = variance_components(rates, episodes)
    # grand mean 11/30; deviations -5/30, 7/30, -2/30; MS_between = 2 * (25+49+4)/900 / 2
    assert anova.ms_between == pytest.approx(78 / 900)
    assert anova.ms_within == pytest.approx(6 * 0.01 / 3)  # each seed 0.1 from its run's mean
    assert anova.sigma2_pretraining == pytest.approx((78 / 900 - 0.02) / 2)
    assert anova.dominant == "pretraining"
    noise = (0.09 + 0.21 + 0.25 + 0.21) / 10 + (0.16 + 0.24) / 20  # p(1-p)/n per arm
    assert anova.evaluation_noise == pytest.approx(noise / 6)
    blob = anova.to_json()
    assert blob["df_between"] == 2 and blob["df_within"] == 3
    assert blob["sd_pretraining_points"] == round(100 * math.sqrt((78 / 900 - 0.02) / 2), 2)
    assert blob["sd_finetuning_points"] == round(100 * math.sqrt(0.02), 2)


def test_the_variance_components_need_two_runs_two_seeds_and_rates():
    with pytest.raises(ValueError, match="at least 2 of each"):
        variance_components(np.array([[0.1], [0.2]]), np.array([[5], [5]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        variance_components(np.array([[0.1, 1.2], [0.2, 0.3]]), np.full((2, 2), 5))


def test_the_pooled_t_interval_is_over_run_means_and_matches_scipy():
    differences = np.array([[0.1, 0.3, 0.2], [0.0, -0.1, 0.1], [0.4, 0.2, 0.3]])
    gap = pooled_gap(differences)
    run_means = differences.mean(axis=1)
    assert gap.run_means == pytest.approx(tuple(run_means))
    assert gap.mean == pytest.approx(differences.mean()) and gap.df == 2
    low, high = stats.t.interval(0.95, 2, loc=run_means.mean(), scale=stats.sem(run_means))
    assert gap.t_interval == pytest.approx((low, high))
    # t(0.975, 2) = 4.303 (the published table): three runs give a wide interval, honestly.
    assert (high - low) / 2 == pytest.approx(4.303 * stats.sem(run_means), rel=1e-3)


def test_the_cluster_bootstrap_repeats_with_its_seed_and_holds_the_mean():
    differences = np.array([[0.1, 0.3, 0.2], [0.0, -0.1, 0.1], [0.4, 0.2, 0.3]])
    interval = cluster_bootstrap(differences)
    assert cluster_bootstrap(differences) == interval  # fixed rng seed: the same draws
    assert interval[0] < differences.mean() < interval[1]
    few = cluster_bootstrap(differences, resamples=40)
    assert cluster_bootstrap(differences, resamples=40, seed=1) != few  # another seed: other draws
    assert interval[0] >= differences.min() and interval[1] <= differences.max()
    assert cluster_bootstrap(np.full((3, 2), 0.25)) == (0.25, 0.25)  # nothing varies
    # No spread within runs: only the run draws matter. Drawing one run three times has
    # probability 1/27 = 3.7% > 2.5%, so the interval spans the lowest to the highest run.
    by_run = np.repeat(np.array([[0.0], [0.2], [0.4]]), 4, axis=1)
    assert cluster_bootstrap(by_run) == pytest.approx((0.0, 0.4))
    # Runs alike, seeds apart: resampling runs alone would give [0.5, 0.5]; seeds are drawn too.
    low, high = cluster_bootstrap(np.array([[0.0, 1.0]] * 3))
    assert low < 0.5 < high


def test_an_unbalanced_design_is_refused_naming_each_missing_run_and_seed():
    values = {"seed0": {0: 0.1, 1: 0.2}, "seed1": {0: 0.3}}
    with pytest.raises(
        ValueError,
        match=r"wrist/2demos/full: unbalanced design, missing \(pretraining run, fine-tuning "
        r"seed\) \(seed1, seed 1\), \(seed2, seed 0\), \(seed2, seed 1\)",
    ):
        balanced_grid(values, ["seed0", "seed1", "seed2"], [0, 1], "wrist/2demos/full")
    with pytest.raises(ValueError, match="at least 2 of each"):
        balanced_grid(values, ["seed0"], [0, 1], "one run")


def arm_results(mode: str, successes_by_seed, episodes: int = 4) -> list[ArmResult]:
    results = [
        ArmResult(Arm(TARGET, mode, seed, 2), {"reach": (s, episodes)})
        for seed, s in enumerate(successes_by_seed)
    ]
    for result in results:
        result.provenance.update({"train": dict(HERE), "evaluate": dict(HERE)})
    return results


def two_runs(scratch_by_run=((1, 0, 2), (1, 0, 2))) -> list[RunResults]:
    full = ((3, 2, 4), (1, 1, 2))
    return [
        RunResults(f"run{i}", f"/ckpt{i}", f"step 6 sha256 {i:016x}",
                   arm_results("full", full[i]) + arm_results("scratch", scratch_by_run[i]))
        for i in range(2)
    ]  # fmt: skip


def test_the_pooled_rows_read_each_run_paired_with_scratch_and_pool_them():
    (row,) = pooled_rows(two_runs(), [0, 1, 2])
    assert (row["target"], row["variant"], row["demos"], row["mode"]) == (
        "wrist",
        "wrist",
        2,
        "full",
    )
    full = np.array([[3, 2, 4], [1, 1, 2]]) / 4
    scratch = np.array([[1, 0, 2], [1, 0, 2]]) / 4  # shared: the same arms under both runs
    first, second = row["runs"]
    assert (first["run"], first["successes"], first["episodes"]) == ("run0", 9, 12)
    assert first["seed_rates"] == [0.75, 0.5, 1.0] and second["scratch_rate"] == 0.25
    expected = paired_gap(dict(enumerate(full[1])), dict(enumerate(scratch[1]))).to_json()
    assert second["gap_to_scratch"] == expected
    pooled = row["gap_to_scratch"]
    assert pooled["mean"] == round(float((full - scratch).mean()), 4) and pooled["df"] == 1
    assert pooled["run_means"] == [0.5, 0.0833]
    anova = variance_components(full, np.full((2, 3), 4)).to_json()
    assert row["variance"] == anova and anova["dominant"] == "pretraining"


def test_a_run_missing_a_seed_of_an_arm_or_of_its_scratch_is_named():
    runs = two_runs()
    kept = [r for r in runs[1].results if (r.arm.mode, r.arm.seed) != ("full", 2)]
    runs[1] = runs[1]._replace(results=kept)
    with pytest.raises(ValueError, match=r"wrist/2demos/full: .*\(run1, seed 2\)"):
        pooled_rows(runs, [0, 1, 2])
    runs = two_runs()
    runs[0] = runs[0]._replace(results=[r for r in runs[0].results if r.arm.mode != "scratch"])
    with pytest.raises(ValueError, match=r"wrist/2demos/scratch: .*\(run0, seed 0\)"):
        pooled_rows(runs, [0, 1, 2])


def test_the_pooled_report_lists_the_runs_says_how_scratch_was_run_and_prints_json_last(
    tmp_path, capsys
):
    budget = ["--demos", "2", "--steps", "3", "--eval_episodes", "4", "--max_steps", "5"]
    args = parse_args(["--workdir", str(tmp_path), "--pretrained", "/ckpt0,/ckpt1", *budget])
    sharing = "scratch arms trained once, under run0, and paired with every run's fine-tuned arms"
    rows = write_pooled_report(args, two_runs(), [2, 0, 1], sharing)
    text = (tmp_path / "transfer_pretraining.txt").read_text()
    header = [line[2:] for line in text.splitlines() if line.startswith("# ")]
    assert header[0].startswith("2 demos/task, 3 steps at batch 32, seeds [0, 1, 2]")
    assert header[0].endswith("pretrained: 2 runs (below)")
    assert header[1] == f"pretraining run run0: /ckpt0 (step 6 sha256 {0:016x})"
    assert header[2] == f"pretraining run run1: /ckpt1 (step 6 sha256 {1:016x})"
    assert header[3] == f"scratch: {sharing}"
    assert header[4] == "every arm at commit 0123456789ab on AMD EPYC, family 25 model 17"
    assert header[5].startswith("command: python scripts/benchmark_transfer.py --workdir")
    assert "t 95% CI over the 2 runs' means (df 1)" in header[6] and "10000 draws" in header[6]
    assert "pooled" in text and "two-stage bootstrap" in text and "pretraining dominates" in text
    printed = capsys.readouterr().out.strip().splitlines()
    line = json.loads(printed[-1])
    assert line == json.loads((tmp_path / "transfer_pretraining.jsonl").read_text())
    assert line["rows"] == json.loads(json.dumps(rows)) and line["scratch"] == sharing
    assert [r["name"] for r in line["pretraining_runs"]] == ["run0", "run1"]
    assert line["seeds"] == [0, 1, 2] and line["provenance"] == header[4]
    elsewhere = two_runs()
    elsewhere[1].results[0].provenance["train"]["cpu"] = "Intel Xeon"
    with pytest.raises(ValueError, match="MIXED"):
        write_pooled_report(args, elsewhere, [0, 1, 2], sharing)

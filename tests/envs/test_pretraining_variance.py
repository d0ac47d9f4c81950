"""The statistics over several pretraining runs (`pretraining_variance`) against values computed by
hand and by scipy, and the pooled report (`pretraining_report`) on constructed arm results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from octo_like.envs.transfer.paired import difference_t_interval, paired_gap
from octo_like.envs.transfer.plan import Arm, ArmResult, Target
from octo_like.envs.transfer.pretraining_report import RunResults, pooled_rows, write_pooled_report
from octo_like.envs.transfer.pretraining_variance import (
    BOOTSTRAP_MIN_RUNS,
    VarianceComponents,
    balanced_grid,
    crossed_bootstrap,
    mean_squares,
    pooled_gap,
    variance_components,
)
from octo_like.envs.transfer.transfer_benchmark import parse_args

HERE = {"commit": "0123456789ab", "cpu": "AMD EPYC, family 25 model 17"}
TARGET = Target("wrist", "wrist", ("reach",))


def test_the_mean_squares_are_a_two_way_anova_without_replication_by_hand():
    grid = np.array([[0.1, 0.3, 0.8], [0.5, 0.4, 0.9], [0.0, 0.2, 0.6]])
    ms = mean_squares(grid)
    grand, runs, seeds = grid.mean(), grid.mean(axis=1), grid.mean(axis=0)
    assert ms.run == pytest.approx(3 * ((runs - grand) ** 2).sum() / 2)
    assert ms.seed == pytest.approx(3 * ((seeds - grand) ** 2).sum() / 2)
    # The three sums of squares add up to the total: nothing is counted twice or lost.
    total = ((grid - grand) ** 2).sum()
    assert 2 * ms.run + 2 * ms.seed + 4 * ms.residual == pytest.approx(total)
    assert ms.df_residual == 4


def test_a_seed_effect_shared_by_every_run_is_not_taken_from_the_pretraining_variance():
    # Additive: run effects -0.1, 0, +0.1 and seed effects -0.3, 0, +0.3, nothing else. The
    # seeds are crossed with the runs (a seed reads the same demonstrations under every run).
    # A one-way ANOVA (seeds as replicates within runs) estimated 0.01 - 0.09 / 3 < 0 -> 0 here.
    rates = 0.5 + np.array([[-0.1], [0.0], [0.1]]) + np.array([[-0.3, 0.0, 0.3]])
    anova = variance_components(rates, np.full((3, 3), 40))
    assert anova.mean_squares.residual == pytest.approx(0.0, abs=1e-15)
    assert anova.sigma2_pretraining == pytest.approx(0.01)
    assert anova.sigma2_seed_shared == pytest.approx(0.09)
    assert anova.sigma2_finetuning == pytest.approx(0.09) and anova.larger == "fine-tuning"
    # No residual to test against: F is undefined, not infinite (an additive 2 x 2 grid of
    # 20-episode rates happens by chance, and would otherwise call any run difference certain).
    assert math.isnan(anova.run_effect_p) and not anova.runs_differ
    assert anova.to_json()["run_effect_f"] is None and anova.to_json()["run_effect_p"] is None


def test_a_constant_grid_has_no_variance_even_where_its_value_does_not_round_exactly():
    # 0.35 and 0.35 - 0.1 are not binary fractions: the means round, and a mean square of 1e-32
    # beside a total of 1e-32 read as F = inf ("the runs differ") before the grid was shifted.
    for value in (0.35, 0.35 - 0.1, 0.05):
        grid = np.full((3, 5), value)
        ms = mean_squares(grid)
        assert (ms.run, ms.seed, ms.residual) == (0.0, 0.0, 0.0)
        assert not variance_components(grid, np.full((3, 5), 20)).runs_differ
        gap = pooled_gap(grid)
        assert gap.degenerate and gap.t_interval == pytest.approx((value, value))


def test_the_components_are_unbiased_and_the_run_test_holds_its_level_in_simulation():
    # 3 runs x 3 seeds with run sd 0.05, seed sd 0.10, residual sd 0.05 (success-rate scale),
    # then with no run effect. 2,000 grids: a mean's Monte Carlo error is about 2.5% of the
    # variances here and a rejection rate's about 0.005, so the bounds below are 3-4 of those.
    rng = np.random.default_rng(0)

    def grids(run_sd):
        shape = (2000, 3, 3)
        return (0.5 + rng.normal(0, run_sd, (2000, 3, 1)) + rng.normal(0, 0.1, (2000, 1, 3))
                + rng.normal(0, 0.05, shape))  # fmt: skip

    squares = [mean_squares(g) for g in grids(0.05)]
    run = np.mean([(ms.run - ms.residual) / 3 for ms in squares])  # the unclipped estimates
    seed = np.mean([(ms.seed - ms.residual) / 3 for ms in squares])
    residual = np.mean([ms.residual for ms in squares])
    assert run == pytest.approx(0.0025, rel=0.2) and seed == pytest.approx(0.01, rel=0.1)
    assert residual == pytest.approx(0.0025, rel=0.1)
    # (the F test reads the mean squares alone; a simulated rate may stray outside [0, 1])
    level = np.mean([VarianceComponents(mean_squares(g), 0.0).runs_differ for g in grids(0.0)])
    assert 0.035 < level < 0.065  # F(2, 4) at p < 0.05 rejects 5% of grids without a run effect


def test_the_run_effect_p_value_is_the_f_distributions_tail():
    rates = np.array([[0.1, 0.3, 0.2], [0.5, 0.7, 0.5], [0.2, 0.4, 0.45]])
    anova = variance_components(rates, np.full((3, 3), 40))
    ms = anova.mean_squares
    assert anova.run_effect_f == pytest.approx(ms.run / ms.residual)
    assert anova.run_effect_p == pytest.approx(stats.f.sf(ms.run / ms.residual, 2, 4))
    assert anova.run_effect_p < 0.05 and anova.runs_differ and anova.larger == "pretraining"
    blob = anova.to_json()
    assert (blob["df_run"], blob["df_seed"], blob["df_residual"]) == (2, 2, 4)
    assert blob["sd_pretraining_points"] == round(100 * math.sqrt((ms.run - ms.residual) / 3), 2)


def test_evaluation_noise_is_the_unbiased_binomial_variance_per_arm():
    rates = np.array([[0.1, 0.3], [0.5, 0.7], [0.0, 1.0]])
    episodes = np.array([[10, 10], [10, 10], [20, 20]])
    anova = variance_components(rates, episodes)
    # p (1 - p) / (n - 1): E[p^(1 - p^)] = p (1 - p) (n - 1) / n. At p^ = 0 or 1 it reads 0.
    noise = (0.09 + 0.21 + 0.25 + 0.21) / 9 + 0.0
    assert anova.evaluation_noise == pytest.approx(noise / 6)


def test_the_variance_components_need_two_runs_two_seeds_rates_and_an_episode():
    with pytest.raises(ValueError, match="at least 2 of each"):
        variance_components(np.array([[0.1], [0.2]]), np.array([[5], [5]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        variance_components(np.array([[0.1, 1.2], [0.2, 0.3]]), np.full((2, 2), 5))
    with pytest.raises(ValueError, match="at least 1 episode"):
        variance_components(np.full((2, 2), 0.5), np.zeros((2, 2)))
    one = variance_components(np.array([[0.0, 1.0], [1.0, 1.0]]), np.ones((2, 2))).to_json()
    assert one["evaluation_noise"] is None  # one episode says nothing of the binomial spread


def test_the_pooled_t_interval_covers_95_percent_where_one_over_run_means_does_not():
    # Seeds crossed with runs and a seed effect (sd 0.10) but no run effect: an interval over
    # the 3 run means treats the seeds as fixed and covered 65% in this simulation; the crossed
    # design's interval must cover at least 95% (Monte Carlo error about 0.005 at 2,000 grids),
    # here and with a run effect, and stay no wider than needed when nothing but noise varies.
    rng = np.random.default_rng(1)
    for run_sd, seed_sd in ((0.0, 0.1), (0.1, 0.0), (0.05, 0.1), (0.0, 0.0)):
        grids = (0.3 + rng.normal(0, run_sd, (2000, 3, 1)) + rng.normal(0, seed_sd, (2000, 1, 3))
                 + rng.normal(0, 0.05, (2000, 3, 3)))  # fmt: skip
        covered = np.mean(
            [low <= 0.3 <= high for low, high in (pooled_gap(g).t_interval for g in grids)]
        )
        assert 0.945 <= covered <= 0.999, (run_sd, seed_sd, covered)
        if seed_sd:
            over_runs = [difference_t_interval(g.mean(axis=1)) for g in grids]
            assert np.mean([low <= 0.3 <= high for low, high in over_runs]) < 0.9


def test_the_pooled_gap_by_hand_and_when_nothing_varies():
    differences = np.array([[0.1, 0.3, 0.2], [0.0, -0.1, 0.1], [0.4, 0.2, 0.3]])
    gap = pooled_gap(differences)
    ms = mean_squares(differences)
    assert gap.run_means == pytest.approx(tuple(differences.mean(axis=1)))
    assert gap.mean == pytest.approx(differences.mean())
    combined = ms.run + ms.seed - ms.residual
    assert combined >= ms.residual  # the Satterthwaite branch
    assert gap.standard_error == pytest.approx(math.sqrt(combined / 9))
    df = combined**2 / (ms.run**2 / 2 + ms.seed**2 / 2 + ms.residual**2 / 4)
    assert gap.df == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * gap.standard_error
    assert gap.t_interval == pytest.approx((gap.mean - half, gap.mean + half))
    assert gap.bootstrap_interval is None and not gap.degenerate  # 3 runs: no bootstrap
    # Little run or seed effect: the variance is floored at the residual's, on its df.
    noise_only = np.array([[0.1, 0.0, 0.2], [0.0, 0.2, 0.1], [0.2, 0.1, 0.0]])  # a Latin square
    ms = mean_squares(noise_only)
    assert ms.run == ms.seed == pytest.approx(0.0, abs=1e-15) and ms.residual > 0
    floored = pooled_gap(noise_only)
    assert floored.df == 4 and floored.standard_error == pytest.approx(math.sqrt(ms.residual / 9))
    flat = pooled_gap(np.full((3, 3), 0.25))
    assert flat.t_interval == (0.25, 0.25) and flat.degenerate and flat.to_json()["degenerate"]


def test_the_crossed_bootstrap_repeats_with_its_seed_and_draws_seeds_across_runs():
    differences = np.array([[0.1, 0.3, 0.2], [0.0, -0.1, 0.1], [0.4, 0.2, 0.3]])
    interval = crossed_bootstrap(differences)
    assert crossed_bootstrap(differences) == interval  # fixed rng seed: the same draws
    assert interval[0] < differences.mean() < interval[1]
    few = crossed_bootstrap(differences, resamples=40)
    assert crossed_bootstrap(differences, resamples=40, seed=1) != few
    # Runs alike, seeds apart: every draw's seeds are shared by its runs, so a draw of seed 1
    # three times (probability 1/27 > 2.5%) gives 1.0: the interval spans [0, 1].
    assert crossed_bootstrap(np.array([[0.0, 0.5, 1.0]] * 3)) == pytest.approx((0.0, 1.0))
    many = np.random.default_rng(2).normal(0.2, 0.1, (BOOTSTRAP_MIN_RUNS, 3))
    assert pooled_gap(many).bootstrap_interval == crossed_bootstrap(many)


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
    assert pooled["mean"] == round(float((full - scratch).mean()), 4)
    assert pooled == pooled_gap(full - scratch).to_json() and pooled["run_means"] == [0.5, 0.0833]
    anova = variance_components(full, np.full((2, 3), 4)).to_json()
    assert row["variance"] == anova and anova["larger"] == "pretraining"


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
    assert "seeds are crossed with runs" in header[6] and "10000 draws" in header[6]
    assert "t (crossed, df" in text and "run effect F(1, 2) = " in text
    assert "larger point estimate: pretraining" in text
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

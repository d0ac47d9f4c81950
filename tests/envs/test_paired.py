"""Paired-seed arithmetic of the demonstration-count curve
(`octo_like.envs.transfer.paired`), against hand-computed values and the published t table."""

from __future__ import annotations

import pytest

from octo_like.envs.transfer.paired import (
    BOOTSTRAP_MIN_SEEDS,
    check_provenance,
    nested_demo_subsets,
    paired_gap,
)


def test_each_seeds_subsets_are_nested_and_drawn_per_seed():
    subsets = nested_demo_subsets(50, [25, 5, 10, 50], seed=3)
    assert list(subsets) == [5, 10, 25, 50]
    assert [len(s) for s in subsets.values()] == [5, 10, 25, 50]
    for small, large in zip([5, 10, 25], [10, 25, 50], strict=True):
        assert set(subsets[small]) < set(subsets[large])
    assert subsets[50] == tuple(range(50))
    assert nested_demo_subsets(50, [5, 10], seed=3) == {5: subsets[5], 10: subsets[10]}
    assert nested_demo_subsets(50, [10], seed=4)[10] != subsets[10]  # seeds draw their own


def test_demo_counts_beyond_the_collected_or_not_positive_are_refused():
    with pytest.raises(ValueError, match="50 demonstrations asked for, 40 collected"):
        nested_demo_subsets(40, [5, 50], seed=0)
    with pytest.raises(ValueError, match="positive"):
        nested_demo_subsets(40, [0, 5], seed=0)
    with pytest.raises(ValueError, match="whole numbers"):
        nested_demo_subsets(40, [2.5, 5], seed=0)


def test_the_paired_gap_of_the_broad_benchmarks_seeds():
    """The broad benchmark's per-seed differences as issue 42 reads them (-.13, -.27, -.15), by
    hand: mean -0.18333, sample sd 0.075719, se 0.043716, t(0.975, 2) = 4.302653, half-width
    0.188096."""
    gap = paired_gap({0: 0.60, 1: 0.50, 2: 0.70}, {0: 0.73, 1: 0.77, 2: 0.85})
    assert gap.seeds == (0, 1, 2)
    assert gap.differences == pytest.approx((-0.13, -0.27, -0.15))
    assert gap.mean == pytest.approx(-0.183333, abs=1e-6)
    assert gap.t_interval == pytest.approx((-0.371429, 0.004763), abs=1e-6)
    assert gap.bootstrap_interval is None  # 3 seeds: it would cover far less than 95%
    assert gap.to_json()["t_ci95"] == [-0.3714, 0.0048]


def test_the_bootstrap_interval_from_enough_seeds():
    """Ten seeds, differences 0.0, 0.1, ..., 0.9 (mean 0.45, sd 0.302765, t(0.975, 9) =
    2.262157): t interval 0.45 +- 0.216585; the bootstrap's lies inside the differences' range,
    around the mean, and is reproducible."""
    seeds = range(BOOTSTRAP_MIN_SEEDS)
    arm = {s: 0.1 * s for s in seeds}
    gap = paired_gap(arm, {s: 0.0 for s in seeds})
    assert gap.t_interval == pytest.approx((0.233415, 0.666585), abs=1e-6)
    low, high = gap.bootstrap_interval
    assert 0.0 < low < 0.45 < high < 0.9
    assert paired_gap(arm, {s: 0.0 for s in seeds}) == gap  # seeded
    equal = paired_gap({s: 0.7 for s in seeds}, {s: 0.5 for s in seeds})
    assert equal.t_interval == pytest.approx((0.2, 0.2))
    # Two seeds that disagree: t (12.7 x) reaches past the rates' bounds, cut to [-1, 1]
    # (2026-11-27's validation printed window-open's paired gap as -0.20 [-2.74, +2.34]).
    spread = paired_gap({0: 0.05, 1: 0.25}, {0: 0.05, 1: 0.65})
    assert spread.mean == pytest.approx(-0.2) and spread.t_interval == (-1.0, 1.0)
    assert equal.bootstrap_interval == pytest.approx((0.2, 0.2))


def test_unpaired_or_single_seeds_and_bad_rates_are_refused():
    assert paired_gap({0: 0.5, 1: 0.4}, {1: 0.3, 0: 0.2}).mean == pytest.approx(0.2)  # healthy
    with pytest.raises(ValueError, match=r"unpaired seeds: the arm has \[0, 1\], the baseline"):
        paired_gap({0: 0.5, 1: 0.4}, {0: 0.3, 2: 0.2})
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_gap({0: 0.5}, {0: 0.3})
    with pytest.raises(ValueError, match=r"seed 1: success rates must lie in \[0, 1\]"):
        paired_gap({0: 0.5, 1: float("nan")}, {0: 0.3, 1: 0.2})


def test_a_report_mixing_commits_or_machines_is_refused_unless_it_says_so():
    one = [{"commit": "abc123", "cpu": "AMD EPYC"}] * 3
    assert check_provenance(one) == "every arm at commit abc123 on AMD EPYC"
    mixed = [*one, {"commit": "def456", "cpu": "Intel Xeon"}]
    with pytest.raises(ValueError, match="MIXED: commits abc123, def456; CPU models AMD EPYC; "):
        check_provenance(mixed)
    assert check_provenance(mixed, allow_mixed=True).startswith("MIXED: commits abc123, def456")
    named = [{**r, "name": f"t/full/seed{i}"} for i, r in enumerate(mixed)]
    with pytest.raises(ValueError, match=r"\(abc123 on AMD EPYC: t/full/seed0, t/full/seed1, "
                       r"t/full/seed2; def456 on Intel Xeon: t/full/seed3\)"):  # fmt: skip
        check_provenance(named)
    with pytest.raises(ValueError, match=r"result 1 do not record"):
        check_provenance([one[0], {"commit": "abc123"}])
    flagged = check_provenance([one[0], {"commit": "abc123"}], allow_mixed=True)
    assert flagged == "MIXED: commits abc123; CPU models AMD EPYC; unrecorded"
    unrecorded = check_provenance([{}, {}], allow_mixed=True)  # nothing recorded is not "every"
    assert unrecorded == "MIXED: commits unrecorded; CPU models unrecorded"

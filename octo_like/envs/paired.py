"""Paired-seed arithmetic of the transfer benchmark's demonstration-count curve (issue 42).

Both arms of a seed (fine-tuned and scratch) train on the same demonstrations in the same order
and are evaluated on the same scenes, so what varies between seeds (which demonstrations, the
initialization, the data order) is shared by the pair. The gap is then read per seed, and its
interval is over seeds: pooling every episode of every seed as independent trials (Newcombe's
interval, `transfer.newcombe_difference`) ignores the seed-to-seed spread and can be about half
as wide as the seeds allow.

- `nested_demo_subsets`: per seed, the demonstrations of each count, each subset inside the next
  (5 of the 10, 10 of the 25, ...), so a curve's points differ only by the demonstrations added.
- `paired_gap`: per-seed differences, their mean, a Student-t and a percentile-bootstrap 95%
  interval over seeds.
- `check_provenance`: one report, one commit and one CPU model, unless it says otherwise.

Not yet wired into `transfer_benchmark` (its `--demos` still takes one count).

Pure Python and numpy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np


def nested_demo_subsets(
    num_episodes: int, counts: Sequence[int], seed: int
) -> dict[int, tuple[int, ...]]:
    """{count: sorted episode indices} for one seed: the first `count` of one permutation of
    range(`num_episodes`) drawn from `seed`, so every subset holds the smaller ones."""
    counts = sorted({int(c) for c in counts})
    if not counts or counts[0] < 1:
        raise ValueError(f"demonstration counts must be positive integers, got {counts}")
    if counts[-1] > num_episodes:
        raise ValueError(
            f"{counts[-1]} demonstrations asked for, {num_episodes} collected: collect at least "
            "the largest count"
        )
    order = np.random.default_rng(seed).permutation(num_episodes)
    return {count: tuple(sorted(int(i) for i in order[:count])) for count in counts}


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: int) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


@dataclasses.dataclass(frozen=True)
class PairedGap:
    """An arm's success rate minus its paired baseline's, seed by seed; intervals over seeds."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]  # arm - baseline, in `seeds`' order
    mean: float
    t_interval: tuple[float, float]  # 95%, Student-t with len(seeds) - 1 degrees of freedom
    bootstrap_interval: tuple[float, float]  # 95% percentile bootstrap of the mean over seeds

    def to_json(self) -> dict:
        rounded = lambda values: [round(v, 4) for v in values]  # noqa: E731
        return {
            "seeds": list(self.seeds),
            "differences": rounded(self.differences),
            "mean": round(self.mean, 4),
            "t_ci95": rounded(self.t_interval),
            "bootstrap_ci95": rounded(self.bootstrap_interval),
        }


def paired_gap(
    arm_rates: Mapping[int, float],
    baseline_rates: Mapping[int, float],
    *,
    resamples: int = 10_000,
    bootstrap_seed: int = 0,
) -> PairedGap:
    """The paired gap of `arm_rates` over `baseline_rates` ({seed: success rate}). Both must
    hold the same seeds (a seed missing on one side has no pair: refused, not dropped), at
    least two."""
    seeds = tuple(sorted(arm_rates))
    if set(seeds) != set(baseline_rates):
        raise ValueError(
            f"unpaired seeds: the arm has {sorted(arm_rates)}, the baseline "
            f"{sorted(baseline_rates)}; run both arms on the same seeds"
        )
    if len(seeds) < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got {list(seeds)}")
    rates = [(float(arm_rates[s]), float(baseline_rates[s])) for s in seeds]
    for seed, pair in zip(seeds, rates, strict=True):
        if not all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in pair):
            raise ValueError(f"seed {seed}: success rates must lie in [0, 1], got {pair}")
    differences = np.array([a - b for a, b in rates])
    n = len(differences)
    mean = float(differences.mean())
    half = student_t_quantile(0.975, n - 1) * float(differences.std(ddof=1)) / math.sqrt(n)
    draws = np.random.default_rng(bootstrap_seed).integers(0, n, size=(resamples, n))
    means = differences[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return PairedGap(
        seeds,
        tuple(float(d) for d in differences),
        mean,
        (mean - half, mean + half),
        (float(low), float(high)),
    )


def check_provenance(records: Sequence[Mapping[str, str]], *, allow_mixed: bool = False) -> str:
    """The report header's line on where its results come from. `records`: one per result,
    each with its ``commit`` and ``cpu`` (the machine's CPU model). Results of several commits
    or CPU models are refused unless `allow_mixed`; then the line says so."""
    if not records:
        raise ValueError("no results to report")
    missing = [i for i, r in enumerate(records) if not r.get("commit") or not r.get("cpu")]
    if missing:
        raise ValueError(f"results {missing} do not record their commit and CPU model")
    commits = sorted({r["commit"] for r in records})
    cpus = sorted({r["cpu"] for r in records})
    if len(commits) == 1 and len(cpus) == 1:
        return f"every arm at commit {commits[0]} on {cpus[0]}"
    mixed = f"MIXED: commits {', '.join(commits)}; CPU models {'; '.join(cpus)}"
    if not allow_mixed:
        raise ValueError(f"{mixed}: rerun the arms at one commit on one machine, or allow mixing")
    return mixed

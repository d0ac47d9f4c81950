"""Paired-seed arithmetic of the transfer benchmark's demonstration-count curve (issue 42).

Both arms of a seed (fine-tuned and scratch) train on the same demonstrations in the same order
and are evaluated on the same scenes, so what varies between seeds (which demonstrations, the
initialization, the data order) is shared by the pair. The gap is then read per seed, and its
interval is over seeds: pooling every episode of every seed as independent trials (Newcombe's
interval, `transfer.newcombe_difference`) ignores the seed-to-seed spread and can be about half
as wide as the seeds allow.

- `nested_demo_subsets`: per seed, the demonstrations of each count, each subset inside the next
  (5 of the 10, 10 of the 25, ...), so a curve's points differ only by the demonstrations added.
- `paired_gap`: per-seed differences, their mean and a Student-t 95% interval over seeds (the
  percentile bootstrap's too, from `BOOTSTRAP_MIN_SEEDS` seeds: with fewer it covers far less
  than 95%, about [min, max] of the differences at 2 seeds).
- `check_provenance`: one report, one commit and one CPU model, unless it says otherwise.

Not yet wired into `transfer_benchmark` (its `--demos` still takes one count).

numpy, and scipy (a dependency of jax) for Student's t.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_MIN_SEEDS = 10


def nested_demo_subsets(
    num_episodes: int, counts: Sequence[int], seed: int
) -> dict[int, tuple[int, ...]]:
    """{count: sorted episode indices} for one seed: the first `count` of one permutation of
    range(`num_episodes`) drawn from `seed`, so every subset holds the smaller ones."""
    if any(isinstance(c, bool) or int(c) != c for c in counts):
        raise ValueError(f"demonstration counts must be whole numbers, got {list(counts)}")
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


@dataclasses.dataclass(frozen=True)
class PairedGap:
    """An arm's success rate minus its paired baseline's, seed by seed; intervals over seeds."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]  # arm - baseline, in `seeds`' order
    mean: float
    t_interval: tuple[float, float]  # 95%, Student-t with len(seeds) - 1 degrees of freedom
    # 95% percentile bootstrap of the mean over seeds; None below BOOTSTRAP_MIN_SEEDS seeds.
    bootstrap_interval: tuple[float, float] | None

    def to_json(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "differences": _rounded(self.differences),
            "mean": round(self.mean, 4),
            "t_ci95": _rounded(self.t_interval),
            "bootstrap_ci95": None
            if self.bootstrap_interval is None
            else _rounded(self.bootstrap_interval),
        }


def _rounded(values) -> list[float]:
    return [round(v, 4) for v in values]


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
    half = float(stats.t.ppf(0.975, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
    bootstrap = None
    if n >= BOOTSTRAP_MIN_SEEDS:
        draws = np.random.default_rng(bootstrap_seed).integers(0, n, size=(resamples, n))
        low, high = np.quantile(differences[draws].mean(axis=1), [0.025, 0.975])
        bootstrap = (float(low), float(high))
    return PairedGap(
        seeds, tuple(float(d) for d in differences), mean, (mean - half, mean + half), bootstrap
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

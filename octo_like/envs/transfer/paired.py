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
    # 95%, Student-t with len(seeds) - 1 degrees of freedom, cut to [-1, 1]
    t_interval: tuple[float, float]
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
    bootstrap = None
    if n >= BOOTSTRAP_MIN_SEEDS:
        draws = np.random.default_rng(bootstrap_seed).integers(0, n, size=(resamples, n))
        low, high = np.quantile(differences[draws].mean(axis=1), [0.025, 0.975])
        bootstrap = (float(low), float(high))
    return PairedGap(
        seeds,
        tuple(float(d) for d in differences),
        float(differences.mean()),
        difference_t_interval(differences),
        bootstrap,
    )


def difference_t_interval(differences: Sequence[float]) -> tuple[float, float]:
    """Student-t 95% interval of the mean of `differences` of success rates (df = len - 1),
    cut to [-1, 1]: a difference of two rates lies there, and with 2-3 values t's interval can
    reach past it."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    standard_error = float(differences.std(ddof=1)) / math.sqrt(n)
    return rate_difference_t_interval(float(differences.mean()), standard_error, n - 1)


def rate_difference_t_interval(
    mean: float, standard_error: float, df: float
) -> tuple[float, float]:
    """Student-t 95% interval mean +- t(0.975, df) * standard_error of a difference of success
    rates, cut to [-1, 1] (`difference_t_interval`; df may be fractional, e.g. Satterthwaite's)."""
    half = float(stats.t.ppf(0.975, df)) * standard_error
    return max(-1.0, mean - half), min(1.0, mean + half)


def check_provenance(records: Sequence[Mapping[str, str]], *, allow_mixed: bool = False) -> str:
    """The report header's line on where its results come from. `records`: one per result
    (or stage of one), each with its ``commit`` and ``cpu`` (the machine's CPU model) and
    optionally a ``name`` the errors use. Results of several commits or CPU models, or that do
    not record them, are refused unless `allow_mixed`; then the line says MIXED."""
    if not records:
        raise ValueError("no results to report")
    names = [r.get("name") or f"result {i}" for i, r in enumerate(records)]
    missing = [
        n for n, r in zip(names, records, strict=True) if not r.get("commit") or not r.get("cpu")
    ]
    if missing and not allow_mixed:
        raise ValueError(
            f"{_some(missing)} do not record their commit and CPU model: rerun them, or allow "
            "mixing (the report then says MIXED)"
        )
    commits = sorted({r.get("commit") or "unrecorded" for r in records})
    cpus = sorted({r.get("cpu") or "unrecorded" for r in records})
    if len(commits) == 1 and len(cpus) == 1 and not missing:
        return f"every arm at commit {commits[0]} on {cpus[0]}"
    mixed = f"MIXED: commits {', '.join(commits)}; CPU models {'; '.join(cpus)}"
    if not allow_mixed:
        groups: dict[tuple[str, str], list[str]] = {}
        for name, r in zip(names, records, strict=True):
            groups.setdefault((r["commit"], r["cpu"]), []).append(name)
        where = "; ".join(f"{c} on {m}: {_some(n)}" for (c, m), n in sorted(groups.items()))
        raise ValueError(
            f"{mixed} ({where}): rerun the arms at one commit on one machine, or allow mixing"
        )
    return mixed


def _some(names: Sequence[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more

"""How much of a transfer result is the pretraining run? Statistics over several pretraining runs.

One pretraining command run three times ended at validation loss 0.116, 0.132 and 0.152, and its
checkpoints transferred very differently: a gap to scratch measured from one pretraining run says
how that checkpoint transfers, not how the recipe does. Here R pretraining runs are each
fine-tuned with the same S seeds (the two arms of a seed read the same demonstrations), so a
cell (target, demonstrations, arm) has fine-tuned success rates y[r, s] and paired differences
d[r, s] = y[r, s] - b[r, s] to scratch (b[r, s] = b[s] when the scratch arms are shared).

- `pooled_gap`: the mean of all R*S differences, d = mean_r d_r (d_r: run r's mean over seeds;
  equal weights in a balanced design), with
  - a Student-t 95% interval over the per-run means: d +- t(0.975, R-1) * sd(d_r) / sqrt(R).
    The runs are the units that carry the pretraining variance; at 3 runs df = 2 and t = 4.30,
    as wide as 3 runs honestly allow;
  - a two-stage (cluster) percentile bootstrap: draw R runs with replacement, then S seeds with
    replacement within each drawn run; the statistic is the mean of the R*S drawn differences;
    2.5th and 97.5th percentiles of `RESAMPLES` draws from the fixed rng seed `BOOTSTRAP_SEED`.
- `variance_components` of y, a one-way random-effects ANOVA (pretraining run = group,
  fine-tuning seeds = replicates), y_r = mean_s y[r, s], y = mean_r y_r:
      MS_between = S * sum_r (y_r - y)^2 / (R - 1)
      MS_within  = sum_r sum_s (y[r, s] - y_r)^2 / (R * (S - 1))
      sigma2_pretraining = max(0, (MS_between - MS_within) / S)  (E[MS_between] = sigma2_ft +
                                                                   S * sigma2_pre)
      sigma2_finetuning  = MS_within
  and the part of MS_within that evaluation noise alone explains: the mean over the R*S arms of
  p * (1 - p) / n (p: the arm's success rate, n: its episodes), the binomial variance of a rate
  measured on n episodes (an upper bound for an arm whose tasks differ in difficulty, since
  p(1-p) is at least the mean of its tasks' p_t(1-p_t)).

Every statistic needs a balanced design (every run fine-tuned with every seed): `balanced_grid`
refuses another, naming each missing (run, seed). numpy; the t interval is
`paired.difference_t_interval`, the one the per-seed gaps use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from octo_like.envs.transfer.paired import difference_t_interval

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def balanced_grid(
    values: Mapping[str, Mapping[int, float]], runs: Sequence[str], seeds: Sequence[int], what: str
) -> np.ndarray:
    """float64[R, S]: ``values[run][seed]`` for every run of `runs` and seed of `seeds` (the
    design every statistic here assumes). ValueError naming `what` and every missing (run,
    seed) when one is absent: dropping it would weight the runs unequally."""
    missing = [(run, seed) for run in runs for seed in seeds if seed not in values.get(run, {})]
    if missing:
        shown = ", ".join(f"({run}, seed {seed})" for run, seed in missing)
        raise ValueError(
            f"{what}: unbalanced design, missing (pretraining run, fine-tuning seed) {shown}: "
            "the statistics over pretraining runs need every run fine-tuned with every seed"
        )
    if len(runs) < 2 or len(seeds) < 2:
        raise ValueError(
            f"{what}: {len(runs)} pretraining runs x {len(seeds)} seeds; the statistics over "
            "pretraining runs need at least 2 of each"
        )
    return np.array([[float(values[run][seed]) for seed in seeds] for run in runs])


def cluster_bootstrap(
    differences: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% two-stage percentile bootstrap of the mean of `differences` (float[R, S]): runs drawn
    with replacement, then seeds with replacement within each drawn run."""
    runs, seeds = differences.shape
    rng = np.random.default_rng(seed)
    drawn_runs = rng.integers(0, runs, size=(resamples, runs, 1))
    drawn_seeds = rng.integers(0, seeds, size=(resamples, runs, seeds))
    means = differences[drawn_runs, drawn_seeds].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class PooledGap:
    """A gap to scratch over R pretraining runs x S seeds (module docstring)."""

    run_means: tuple[float, ...]  # d_r, in the runs' order
    mean: float
    t_interval: tuple[float, float]  # over the run means, df = R - 1
    bootstrap_interval: tuple[float, float]  # two-stage: runs, then seeds within each

    @property
    def df(self) -> int:
        return len(self.run_means) - 1

    def to_json(self) -> dict:
        return {
            "run_means": _rounded(self.run_means),
            "mean": round(self.mean, 4),
            "t_ci95": _rounded(self.t_interval),
            "df": self.df,
            "bootstrap_ci95": _rounded(self.bootstrap_interval),
            "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "stages": "runs, seeds"},
        }


def pooled_gap(differences: np.ndarray) -> PooledGap:
    """The pooled gap of `differences` (float[R, S], from `balanced_grid`)."""
    run_means = differences.mean(axis=1)
    return PooledGap(
        tuple(float(m) for m in run_means),
        float(differences.mean()),
        difference_t_interval(run_means),
        cluster_bootstrap(differences),
    )


@dataclasses.dataclass(frozen=True)
class VarianceComponents:
    """One-way random-effects ANOVA of a success rate over pretraining runs (module docstring).
    Variances are of rates in [0, 1]; the ``sd_*`` properties are in success-rate points."""

    runs: int
    seeds: int
    ms_between: float
    ms_within: float
    evaluation_noise: float  # mean over arms of p (1 - p) / episodes

    @property
    def sigma2_pretraining(self) -> float:
        return max(0.0, (self.ms_between - self.ms_within) / self.seeds)

    @property
    def sigma2_finetuning(self) -> float:
        return self.ms_within

    def sd_points(self, variance: float) -> float:
        return 100.0 * math.sqrt(variance)

    @property
    def dominant(self) -> str:
        """``pretraining``, ``fine-tuning`` or ``neither`` (equal, both zero included)."""
        pre, fine = self.sigma2_pretraining, self.sigma2_finetuning
        return "pretraining" if pre > fine else "fine-tuning" if fine > pre else "neither"

    def to_json(self) -> dict:
        return {
            "runs": self.runs,
            "seeds_per_run": self.seeds,
            "ms_between": round(self.ms_between, 6),
            "df_between": self.runs - 1,
            "ms_within": round(self.ms_within, 6),
            "df_within": self.runs * (self.seeds - 1),
            "sigma2_pretraining": round(self.sigma2_pretraining, 6),
            "sigma2_finetuning": round(self.sigma2_finetuning, 6),
            "evaluation_noise": round(self.evaluation_noise, 6),
            "sd_pretraining_points": round(self.sd_points(self.sigma2_pretraining), 2),
            "sd_finetuning_points": round(self.sd_points(self.sigma2_finetuning), 2),
            "sd_evaluation_noise_points": round(self.sd_points(self.evaluation_noise), 2),
            "dominant": self.dominant,
        }


def variance_components(rates: np.ndarray, episodes: np.ndarray) -> VarianceComponents:
    """The ANOVA of `rates` (float[R, S] success rates in [0, 1], from `balanced_grid`), each
    measured on `episodes` (int[R, S], at least 1) episodes."""
    rates, episodes = np.asarray(rates, dtype=float), np.asarray(episodes, dtype=float)
    if rates.shape != episodes.shape or rates.ndim != 2:
        raise ValueError(f"rates {rates.shape} and episodes {episodes.shape}: two [runs, seeds]")
    runs, seeds = rates.shape
    if runs < 2 or seeds < 2:
        raise ValueError(f"{runs} runs x {seeds} seeds: the ANOVA needs at least 2 of each")
    if not np.all((rates >= 0) & (rates <= 1)) or not np.all(episodes >= 1):
        raise ValueError("success rates must lie in [0, 1], each measured on at least 1 episode")
    run_means = rates.mean(axis=1)
    ms_between = seeds * float(((run_means - run_means.mean()) ** 2).sum()) / (runs - 1)
    ms_within = float(((rates - run_means[:, None]) ** 2).sum()) / (runs * (seeds - 1))
    noise = float((rates * (1 - rates) / episodes).mean())
    return VarianceComponents(runs, seeds, ms_between, ms_within, noise)


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]

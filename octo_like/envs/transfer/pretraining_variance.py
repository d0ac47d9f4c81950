"""How much of a transfer result is the pretraining run? Statistics over several pretraining runs.

One pretraining command run three times ended at validation loss 0.116, 0.132 and 0.152, and its
checkpoints transferred very differently: a gap to scratch measured from one pretraining run says
how that checkpoint transfers, not how the recipe does. Here R pretraining runs are each
fine-tuned with the same S seeds, so a cell (target, demonstrations, arm) has fine-tuned success
rates y[r, s] and paired differences d[r, s] = y[r, s] - b[r, s] to scratch (b[r, s] = b[s] when
the scratch arms are shared).

The seeds are **crossed** with the runs, not nested in them: seed s reads the same
demonstrations in the same order and draws the same new-parameter initialization under every
run, and a shared scratch arm b[s] enters every run's d[r, s]. So the model is two-way,
    y[r, s] = mu + a_r + c_s + e[r, s]   (a: run, c: seed, e: the rest, evaluation noise included)
with variances sigma2_run, sigma2_seed, sigma2_res, and the mean squares of the two-way ANOVA
without replication (y_r, y_s: run and seed means; y: the grand mean):
    MS_run = S * sum_r (y_r - y)^2 / (R - 1)             E = sigma2_res + S * sigma2_run
    MS_seed = R * sum_s (y_s - y)^2 / (S - 1)            E = sigma2_res + R * sigma2_seed
    MS_res = sum (y[r,s] - y_r - y_s + y)^2 / ((R-1)(S-1))  E = sigma2_res
A one-way ANOVA (seeds as replicates within runs) has MS_between = MS_run, but its MS_within
holds the seed effect too, and subtracting it estimates sigma2_run - sigma2_seed / S: too low.

- `variance_components` of y: sigma2_pretraining = max(0, (MS_run - MS_res) / S); the
  fine-tuning-seed variance, how much one arm's rate moves with the seed under a fixed run,
  sigma2_finetuning = max(0, (MS_seed - MS_res) / R) + MS_res; the test of a run effect,
  F = MS_run / MS_res on (R - 1, (R - 1)(S - 1)) df (at 3 x 3, df 2 and 4: only a large run
  effect shows; undefined when MS_res is 0, an additive grid); and the part of MS_res that
  evaluation noise alone explains, the mean over arms of p (1 - p) / (n - 1) (p: the arm's rate,
  n: its episodes; unbiased for the binomial variance p (1 - p) / n of one task's rate, an upper
  bound for an arm of several tasks of unequal difficulty; 0 at p = 0 or 1, where n episodes
  say least about it; not given from 1 episode).
- `pooled_gap` of d: the mean of all R*S differences, with a Student-t 95% interval whose
  variance is that of a crossed design's grand mean,
      Var(d) = sigma2_run / R + sigma2_seed / S + sigma2_res / (R S)
             ~ (MS_run + MS_seed - MS_res) / (R S)   (at least MS_res / (R S)),
  on Satterthwaite's degrees of freedom. An interval over the R run means alone treats the S
  seeds as fixed (its coverage: 65% in a simulation with a seed effect and no run effect; the
  tests measure this one's). A bootstrap (runs and seeds drawn, the seeds shared by the drawn
  runs) is given only from `BOOTSTRAP_MIN_RUNS` runs: a two-stage one covered 72-80% at 3 runs.

Every statistic needs a balanced design (every run fine-tuned with every seed): `balanced_grid`
refuses another, naming each missing (run, seed). numpy, scipy (a dependency of jax) for the F
distribution, and `paired.rate_difference_t_interval` for the t interval the per-seed gaps use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from octo_like.envs.transfer.paired import BOOTSTRAP_MIN_SEEDS, rate_difference_t_interval

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MIN_RUNS = BOOTSTRAP_MIN_SEEDS  # the same reason: fewer units cover far below 95%
RUN_EFFECT_ALPHA = 0.05


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


@dataclasses.dataclass(frozen=True)
class MeanSquares:
    """The two-way ANOVA without replication of a float[R, S] grid (module docstring)."""

    runs: int
    seeds: int
    run: float  # MS_run, df R - 1
    seed: float  # MS_seed, df S - 1
    residual: float  # MS_res, df (R - 1)(S - 1)

    @property
    def df_residual(self) -> int:
        return (self.runs - 1) * (self.seeds - 1)


def mean_squares(grid: np.ndarray) -> MeanSquares:
    """`MeanSquares` of `grid` (float[R, S], R and S at least 2)."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 2 or min(grid.shape) < 2:
        raise ValueError(f"a [runs, seeds] grid with at least 2 of each, got shape {grid.shape}")
    grid = grid - grid.flat[0]  # the mean squares do not move; a constant grid becomes exact 0s
    runs, seeds = grid.shape
    grand = grid.mean()
    run_means, seed_means = grid.mean(axis=1), grid.mean(axis=0)
    residual = float(((grid - run_means[:, None] - seed_means[None, :] + grand) ** 2).sum())
    if residual <= 1e-12 * float(((grid - grand) ** 2).sum()):
        residual = 0.0  # an additive grid: what is left is the rounding of the means
    return MeanSquares(
        runs,
        seeds,
        seeds * float(((run_means - grand) ** 2).sum()) / (runs - 1),
        runs * float(((seed_means - grand) ** 2).sum()) / (seeds - 1),
        residual / ((runs - 1) * (seeds - 1)),
    )


def crossed_bootstrap(
    differences: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% percentile bootstrap of the mean of `differences` (float[R, S]): each draw takes R
    runs and S seeds with replacement, the seeds shared by every drawn run (they are crossed)."""
    runs, seeds = differences.shape
    rng = np.random.default_rng(seed)
    drawn_runs = rng.integers(0, runs, size=(resamples, runs, 1))
    drawn_seeds = rng.integers(0, seeds, size=(resamples, 1, seeds))
    means = differences[drawn_runs, drawn_seeds].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class PooledGap:
    """A gap to scratch over R pretraining runs x S seeds (module docstring)."""

    run_means: tuple[float, ...]  # d_r, in the runs' order
    mean: float
    standard_error: float
    df: float  # Satterthwaite's
    t_interval: tuple[float, float]
    bootstrap_interval: tuple[float, float] | None  # from BOOTSTRAP_MIN_RUNS runs

    @property
    def degenerate(self) -> bool:
        """Nothing varied (every difference alike): the interval has no width and says nothing
        about how another run or seed would land."""
        return self.standard_error == 0.0

    def to_json(self) -> dict:
        return {
            "run_means": _rounded(self.run_means),
            "mean": round(self.mean, 4),
            "standard_error": round(self.standard_error, 4),
            "df": round(self.df, 2),
            "t_ci95": _rounded(self.t_interval),
            "degenerate": self.degenerate,
            "bootstrap_ci95": None
            if self.bootstrap_interval is None
            else _rounded(self.bootstrap_interval),
            "bootstrap": {
                "resamples": RESAMPLES,
                "seed": BOOTSTRAP_SEED,
                "min_runs": BOOTSTRAP_MIN_RUNS,
            },
        }


def pooled_gap(differences: np.ndarray) -> PooledGap:
    """The pooled gap of `differences` (float[R, S], from `balanced_grid`): the crossed design's
    t interval (module docstring), cut to [-1, 1] by `paired.rate_difference_t_interval`."""
    differences = np.asarray(differences, dtype=float)
    runs, seeds = differences.shape
    ms = mean_squares(differences)
    combined = ms.run + ms.seed - ms.residual
    if combined >= ms.residual:
        squares = ms.run**2 / (runs - 1) + ms.seed**2 / (seeds - 1)
        squares += ms.residual**2 / ms.df_residual
        df = combined**2 / squares if squares > 0 else float(ms.df_residual)
    else:  # little run or seed effect: the residual alone, the least Var(d) can be
        combined, df = ms.residual, float(ms.df_residual)
    standard_error = math.sqrt(combined / (runs * seeds))
    mean = float(differences.mean())
    bootstrap = crossed_bootstrap(differences) if runs >= BOOTSTRAP_MIN_RUNS else None
    return PooledGap(
        tuple(float(m) for m in differences.mean(axis=1)),
        mean,
        standard_error,
        df,
        rate_difference_t_interval(mean, standard_error, df),
        bootstrap,
    )


@dataclasses.dataclass(frozen=True)
class VarianceComponents:
    """The success rate's variance split into pretraining run and fine-tuning seed (module
    docstring). Variances are of rates in [0, 1]; ``sd_points`` gives success-rate points."""

    mean_squares: MeanSquares
    evaluation_noise: float | None  # mean over arms of p (1 - p) / (episodes - 1)

    @property
    def sigma2_pretraining(self) -> float:
        ms = self.mean_squares
        return max(0.0, (ms.run - ms.residual) / ms.seeds)

    @property
    def sigma2_seed_shared(self) -> float:
        """The part of the seed's effect common to every run (same demonstrations, order)."""
        ms = self.mean_squares
        return max(0.0, (ms.seed - ms.residual) / ms.runs)

    @property
    def sigma2_finetuning(self) -> float:
        return self.sigma2_seed_shared + self.mean_squares.residual

    @property
    def run_effect_f(self) -> float:
        """MS_run / MS_res; NaN when MS_res is 0 (an additive grid, e.g. 2 x 2 rates of 20
        episodes: an "infinite" F there would call any run difference certain)."""
        ms = self.mean_squares
        return ms.run / ms.residual if ms.residual > 0 else math.nan

    @property
    def run_effect_p(self) -> float:
        f = self.run_effect_f
        if math.isnan(f):
            return math.nan
        ms = self.mean_squares
        return float(stats.f.sf(f, ms.runs - 1, ms.df_residual))

    @property
    def larger(self) -> str:
        """Which point estimate is larger: ``pretraining``, ``fine-tuning`` or ``neither``."""
        pre, fine = self.sigma2_pretraining, self.sigma2_finetuning
        return "pretraining" if pre > fine else "fine-tuning" if fine > pre else "neither"

    @property
    def runs_differ(self) -> bool:
        """Whether the F test shows a pretraining-run effect beyond the seeds (p < 0.05)."""
        return bool(self.run_effect_p < RUN_EFFECT_ALPHA)  # NaN: False

    @staticmethod
    def sd_points(variance: float) -> float:
        return 100.0 * math.sqrt(variance)

    def to_json(self) -> dict:
        ms = self.mean_squares
        f, p, noise = self.run_effect_f, self.run_effect_p, self.evaluation_noise
        return {
            "runs": ms.runs,
            "seeds_per_run": ms.seeds,
            "design": "crossed: two-way ANOVA without replication",
            "ms_run": round(ms.run, 6),
            "df_run": ms.runs - 1,
            "ms_seed": round(ms.seed, 6),
            "df_seed": ms.seeds - 1,
            "ms_residual": round(ms.residual, 6),
            "df_residual": ms.df_residual,
            "run_effect_f": None if math.isnan(f) else round(f, 4),
            "run_effect_p": None if math.isnan(p) else round(p, 4),
            "runs_differ": self.runs_differ,
            "sigma2_pretraining": round(self.sigma2_pretraining, 6),
            "sigma2_seed_shared": round(self.sigma2_seed_shared, 6),
            "sigma2_finetuning": round(self.sigma2_finetuning, 6),
            "evaluation_noise": None if noise is None else round(noise, 6),
            "sd_pretraining_points": round(self.sd_points(self.sigma2_pretraining), 2),
            "sd_finetuning_points": round(self.sd_points(self.sigma2_finetuning), 2),
            "sd_evaluation_noise_points": None
            if noise is None
            else round(self.sd_points(noise), 2),
            "larger": self.larger,
        }


def variance_components(rates: np.ndarray, episodes: np.ndarray) -> VarianceComponents:
    """The components of `rates` (float[R, S] success rates in [0, 1], from `balanced_grid`),
    each measured on `episodes` (int[R, S], at least 1) episodes."""
    rates, episodes = np.asarray(rates, dtype=float), np.asarray(episodes, dtype=float)
    if rates.shape != episodes.shape or rates.ndim != 2:
        raise ValueError(f"rates {rates.shape} and episodes {episodes.shape}: two [runs, seeds]")
    runs, seeds = rates.shape
    if runs < 2 or seeds < 2:
        raise ValueError(f"{runs} runs x {seeds} seeds: the ANOVA needs at least 2 of each")
    if not np.all((rates >= 0) & (rates <= 1)) or not np.all(episodes >= 1):
        raise ValueError("success rates must lie in [0, 1], each measured on at least 1 episode")
    noise = None  # one episode says nothing of the binomial spread
    if np.all(episodes >= 2):
        noise = float((rates * (1 - rates) / (episodes - 1)).mean())
    return VarianceComponents(mean_squares(rates), noise)


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]

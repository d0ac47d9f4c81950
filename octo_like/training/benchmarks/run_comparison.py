"""Do groups of runs (commits, machines, settings) differ by more than their seeds do?

Issue 70 asked it of three pretraining runs at three commits that ended at validation loss
0.116, 0.132 and 0.152: a single run per commit cannot say whether code moved the curve or the
seed did. Each group holds the same command run with several seeds; every run's curve is the
convergence check's (`convergence.curve_from_metrics`: the training loss averaged over windows
and the validation metrics at one step), and each point gets a one-way analysis of variance
over the groups: F = (between-group mean square) / (within-group mean square), p from
F(g - 1, N - g). A point whose p is under alpha says the groups differ there by more than the
seeds explain; which points decide is the caller's, named before the runs (issue 70's plan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PointComparison:
    """One curve point over the groups: each group's mean and sample standard deviation over
    its seeds, the F statistic and its p-value, and the seed-to-seed standard deviation (pooled
    within groups) beside the standard deviation of the group means."""

    point: str
    means: dict[str, float]
    sds: dict[str, float]
    f: float
    p: float
    within_sd: float
    between_sd: float


def one_way_anova(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(F, p) of the one-way analysis of variance of `groups` (each: one value per run; at
    least 2 groups, at least one with 2 runs). Equal values everywhere give (nan, 1.0): nothing
    differs. Groups that differ with no spread inside them give (inf, 0.0)."""
    from scipy import stats

    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    sizes = np.array([a.size for a in arrays])
    if len(arrays) < 2 or sizes.min() < 1 or sizes.sum() <= len(arrays):
        raise ValueError(
            f"an analysis of variance needs 2 or more groups and more runs than groups, got "
            f"group sizes {sizes.tolist()}"
        )
    grand = np.concatenate(arrays).mean()
    between = sum(a.size * (a.mean() - grand) ** 2 for a in arrays) / (len(arrays) - 1)
    within = within_mean_square(arrays)
    if within == 0:
        return (float("nan"), 1.0) if between == 0 else (float("inf"), 0.0)
    f = between / within
    return float(f), float(stats.f.sf(f, len(arrays) - 1, sizes.sum() - len(arrays)))


def within_mean_square(groups: Sequence[Sequence[float]]) -> float:
    """The seed-to-seed variance pooled within groups: sum of squares about each group's mean
    over (runs - groups) degrees of freedom."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    dof = sum(a.size for a in arrays) - len(arrays)
    return float(sum(((a - a.mean()) ** 2).sum() for a in arrays) / dof)


def compare_groups(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> list[PointComparison]:
    """Every point of `curves` ({group: [one curve per seed]}, all with the same points),
    compared over the groups, in the curves' point order."""
    names = None
    for group, runs in curves.items():
        for i, curve in enumerate(runs):
            if names is None:
                names = list(curve)
            elif list(curve) != names:
                raise ValueError(f"{group}'s run {i} has points {list(curve)}, not {names}")
    if names is None:
        raise ValueError("no runs to compare")
    comparisons = []
    for name in names:
        values = {group: [curve[name] for curve in runs] for group, runs in curves.items()}
        f, p = one_way_anova(list(values.values()))
        comparisons.append(
            PointComparison(
                point=name,
                means={g: float(np.mean(v)) for g, v in values.items()},
                sds={g: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for g, v in values.items()},
                f=f,
                p=p,
                within_sd=float(np.sqrt(within_mean_square(list(values.values())))),
                between_sd=float(np.std([np.mean(v) for v in values.values()], ddof=1)),
            )
        )
    return comparisons


def describe(
    comparisons: Sequence[PointComparison], deciding: Sequence[str], alpha: float
) -> tuple[str, bool]:
    """A table (one row a point: each group's mean +- sd, F, p) and the verdict line; True when
    a `deciding` point's p is under `alpha` (the groups differ by more than the seeds)."""
    known = {c.point for c in comparisons}
    missing = [name for name in deciding if name not in known]
    if missing or not deciding:
        raise ValueError(f"deciding points {missing or deciding} not among {sorted(known)}")
    groups = list(comparisons[0].means)
    header = f"{'point':<20}" + "".join(f" {g:>19}" for g in groups)
    lines = [header + f" {'seed sd':>8} {'F':>7} {'p':>7}"]
    for c in comparisons:
        cells = "".join(f" {c.means[g]:>9.5f} +-{c.sds[g]:>7.5f}" for g in groups)
        mark = "  *" if c.point in deciding else ""
        lines.append(f"{c.point:<20}{cells} {c.within_sd:>8.5f} {c.f:>7.2f} {c.p:>7.4f}{mark}")
    differ = [c.point for c in comparisons if c.point in deciding and c.p < alpha]
    if differ:
        lines.append(
            f"DIFFER: p < {alpha} at {', '.join(differ)}: the groups differ by more than their "
            "seeds do there"
        )
    else:
        lines.append(
            f"SAME: no deciding point (*) has p < {alpha}: the groups differ no more than "
            "their seeds do"
        )
    return "\n".join(lines), bool(differ)

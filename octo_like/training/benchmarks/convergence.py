"""Did a change alter what training learns? A fixed run's loss curve against a band measured
over seeds (issue 70; configs/convergence.py has the runs, scripts/convergence.py runs them).

A curve is a few named points read from a run's metrics.jsonl: the training loss averaged over
each window of `window` steps (one logged value is one batch's, too noisy to compare alone)
and the final held-out metrics. The reference holds each point's mean and standard deviation
over `n` seeds at one commit, and a band: a prediction interval for one more run,
mean +- t(1 - alpha / (2 m), n - 1) * sd * sqrt(1 + 1 / n), with the family of m points
Bonferroni-corrected so that an unchanged program falls outside somewhere with probability
alpha at most. On the machine kind the reference was measured on, a run of a reference seed
also repeats its values bit for bit (tests/training/test_determinism.py): then the check can
say "unchanged" rather than only "within the band".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping

import numpy as np

FORMAT = 1
VAL_METRICS = ("loss", "sampled_mse")


def curve_from_metrics(
    rows: Iterable[Mapping],
    num_steps: int,
    window: int,
    val_metrics: Iterable[str] = VAL_METRICS,
    val_step: int | None = None,
) -> dict[str, float]:
    """{"train_loss@S": mean logged training loss over steps (S - window, S], for S = window,
    2 window, ..., num_steps; "val_<name>" for each of `val_metrics`: the evaluation's at
    `val_step` (default num_steps)} of a run's metrics.jsonl rows (a run that went on past
    num_steps is read up to it). A missing window or value is an error naming it, never a gap."""
    val_step = num_steps if val_step is None else val_step
    if num_steps % window:
        raise ValueError(f"num_steps {num_steps} is not a multiple of the window {window}")
    train, val = {}, {}
    for row in rows:
        if row.get("split", "train") == "train" and "loss" in row:
            train[int(row["step"])] = float(row["loss"])
        elif row.get("split") == "val" and int(row["step"]) == val_step:
            val = row
    curve = {}
    for end in range(window, num_steps + 1, window):
        values = [v for s, v in train.items() if end - window < s <= end]
        if not values:
            raise ValueError(f"no training loss logged in steps ({end - window}, {end}]")
        curve[f"train_loss@{end}"] = float(np.mean(values))
    for name in val_metrics:
        if name not in val:
            raise ValueError(
                f"the run logged no validation {name!r} at step {val_step} (that row: {val})"
            )
        curve[f"val_{name}"] = float(val[name])
    bad = [name for name, value in curve.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"non-finite curve points {bad}: {curve}")
    return curve


@dataclasses.dataclass(frozen=True)
class Band:
    mean: float
    sd: float
    low: float
    high: float


def band_multiplier(seeds: int, points: int, alpha: float) -> float:
    """The prediction interval's half-width in standard deviations (see the module doc)."""
    from scipy import stats

    if seeds < 3:
        raise ValueError(f"a band needs at least 3 seeds, got {seeds}")
    return float(stats.t.ppf(1 - alpha / (2 * points), seeds - 1)) * math.sqrt(1 + 1 / seeds)


def measure_bands(curves: Mapping[int, Mapping[str, float]], multiplier: float) -> dict[str, Band]:
    """Each point's band over the curves of several seeds ({seed: curve}, same points): mean
    +- `multiplier` standard deviations."""
    names = list(next(iter(curves.values())))
    for seed, curve in curves.items():
        if list(curve) != names:
            raise ValueError(f"seed {seed}'s curve has points {list(curve)}, not {names}")
    bands = {}
    for name in names:
        values = np.array([curve[name] for curve in curves.values()])
        mean, sd = float(values.mean()), float(values.std(ddof=1))
        bands[name] = Band(mean, sd, mean - multiplier * sd, mean + multiplier * sd)
    return bands


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a check compares with; written by `scripts/convergence.py measure`."""

    preset: str
    commit: str
    machine: str
    alpha: float
    multiplier: float
    reason: str
    curves: dict[int, dict[str, float]]
    bands: dict[str, Band]

    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        record["format"] = FORMAT
        record["curves"] = {str(seed): curve for seed, curve in self.curves.items()}
        return json.dumps(record, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Reference:
        record = json.loads(text)
        if record.pop("format", None) != FORMAT:
            raise ValueError(f"{where}: not a convergence reference of format {FORMAT}")
        record["curves"] = {int(s): c for s, c in record["curves"].items()}
        record["bands"] = {n: Band(**b) for n, b in record["bands"].items()}
        return cls(**record)


def measure_reference(preset, commit, machine, curves, alpha, reason) -> Reference:
    points = len(next(iter(curves.values())))
    k = band_multiplier(len(curves), points, alpha)
    bands = measure_bands(curves, k)
    return Reference(preset, commit, machine, alpha, k, reason, dict(curves), bands)


@dataclasses.dataclass(frozen=True)
class Verdict:
    outside: dict[str, tuple[float, Band]]  # point -> (value, its band)
    identical_to_seed: bool  # the same values as the reference's run of this seed

    @property
    def passed(self) -> bool:
        return not self.outside


def check_curve(curve: Mapping[str, float], seed: int, reference: Reference) -> Verdict:
    """The points of `curve` (a run of `seed`) outside the reference's bands."""
    if set(curve) != set(reference.bands):
        raise ValueError(
            f"the run's points {sorted(curve)} are not the reference's {sorted(reference.bands)}"
        )
    outside = {
        name: (value, reference.bands[name])
        for name, value in curve.items()
        if not reference.bands[name].low <= value <= reference.bands[name].high
    }
    identical = reference.curves.get(seed) == dict(curve)
    return Verdict(outside, identical)


def describe(curve: Mapping[str, float], verdict: Verdict, reference: Reference) -> str:
    """A table of the run's points against the bands, and one line of verdict."""
    lines = [f"{'point':<18} {'value':>10} {'band low':>10} {'band high':>10} {'(z)':>7}"]
    for name, value in curve.items():
        band = reference.bands[name]
        z = (value - band.mean) / band.sd if band.sd > 0 else float("inf")
        flag = "  OUTSIDE" if name in verdict.outside else ""
        lines.append(
            f"{name:<18} {value:>10.5f} {band.low:>10.5f} {band.high:>10.5f} {z:>+7.2f}{flag}"
        )
    if not verdict.passed:
        names = ", ".join(verdict.outside)
        lines.append(
            f"FAIL: {len(verdict.outside)} point(s) outside the {len(reference.curves)}-seed band "
            f"of {reference.commit} ({names}): training learns something else than the "
            "reference. If the change is meant, measure the reference again in the same commit "
            "(scripts/convergence.py measure --reason ...)."
        )
    elif verdict.identical_to_seed:
        lines.append("PASS: bit-identical to the reference's run of this seed (unchanged)")
    else:
        lines.append(
            f"PASS: inside the band (changed values, or another machine kind than "
            f"{reference.machine!r})"
        )
    return "\n".join(lines)

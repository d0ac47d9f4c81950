"""Which offline number predicts closed-loop success (issue 67): each arm's saved result keeps
the offline metrics of the checkpoint it evaluated (`offline_at`), so the correlation over arms
(`offline_correlations`) is computed from the committed results alone, without the run dirs.

Spearman's rank correlation (average ranks on ties), because success and the metrics need only
move together, not linearly; its 95% interval is a percentile bootstrap over arms (resampled
with replacement, fixed seed), since arms, not episodes, are the units the metric varies over.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

log = logging.getLogger("benchmark_transfer")

# Validation's offline numbers (docs/training.md, "Validation metrics"), then the training loss.
VAL_METRICS = ("loss", "sampled_mse", "xyz_angle", "xyz_accuracy", "gripping_accuracy")
OFFLINE_METRICS = (*VAL_METRICS, "train_loss")
MIN_ARMS = 3  # two arms always rank at +-1


def offline_at(entries: Sequence[Mapping[str, Any]], step: int) -> dict[str, float] | None:
    """``{"step", <VAL_METRICS logged>, "train_loss"?}`` from a run's metrics.jsonl `entries` at
    `step`: the validation entry there (the last, should a resumed run repeat it) and the
    training loss logged at that very step, if any. None without a validation entry there."""
    at = [e for e in entries if int(e.get("step", -1)) == step]
    val = [e for e in at if e.get("split") == "val"]
    if not val:
        return None
    numbers: dict[str, Any] = {"step": int(step)}
    numbers.update({k: float(val[-1][k]) for k in VAL_METRICS if k in val[-1]})
    train = [e for e in at if e.get("split") == "train" and "loss" in e]
    if train:
        numbers["train_loss"] = float(train[-1]["loss"])
    return numbers


def read_offline(run: str, step: int | None) -> dict[str, float] | None:
    """`offline_at` of the run dir `run`'s metrics.jsonl; None (logged, never raised: an arm is
    not lost over it) when there is no file, no step or an unreadable one."""
    from octo_like.training.run.metrics import METRICS_FILE, read_jsonl

    path = os.path.join(run, METRICS_FILE)
    if step is None or not os.path.exists(path):
        return None
    try:
        numbers = offline_at(read_jsonl(path), step)
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("%s: offline numbers not recorded (%s)", path, e)
        return None
    if numbers is None:
        log.info("%s: no validation entry at step %d: offline numbers not recorded", path, step)
    return numbers


def _success_and_offline(result) -> tuple[float | None, Mapping[str, Any]]:
    """(success rate, offline numbers) of an `ArmResult` or its saved JSON dict."""
    if isinstance(result, Mapping):
        counts, offline = result["per_task"].values(), result.get("offline")
    else:
        counts, offline = result.per_task.values(), result.offline
    successes, episodes = (sum(int(c[i]) for c in counts) for i in (0, 1))
    return (successes / episodes if episodes else None), (offline or {})


def _row_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson's of average ranks); NaN where one is constant."""
    rx, ry = (stats.rankdata(v, axis=-1) for v in (x, y))
    rx, ry = (r - r.mean(axis=-1, keepdims=True) for r in (rx, ry))
    denominator = np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / denominator
    return np.where(denominator > 1e-12, np.clip(rho, -1.0, 1.0), np.nan)


def spearman(
    success: Sequence[float], metric: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """``{"rho", "ci95", "n", "note"}`` of paired values; rho and ci95 are None (and `note` says
    why) with fewer than `MIN_ARMS` or when either side is constant. Bootstrap resamples that
    draw a constant side have no rho and are left out of the interval."""
    x, y = np.asarray(success, float), np.asarray(metric, float)
    n = len(x)
    out: dict[str, Any] = {"rho": None, "ci95": None, "n": n, "note": ""}
    if n < MIN_ARMS:
        out["note"] = f"undefined: fewer than {MIN_ARMS} arms"
        return out
    rho = float(_row_rho(x, y))
    if math.isnan(rho):
        constant = "success" if np.ptp(x) == 0 else "the metric"
        out["note"] = f"undefined: {constant} is the same for every arm"
        return out
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = _row_rho(x[draws], y[draws])
    boot = boot[~np.isnan(boot)]
    out["rho"] = round(rho, 4)
    if len(boot):
        out["ci95"] = [round(float(q), 4) for q in np.quantile(boot, [0.025, 0.975])]
    if len(boot) < resamples:
        out["note"] = f"{resamples - len(boot)} of {resamples} resamples constant: left out"
    return out


def offline_correlations(
    results: Iterable[Any], metrics: Sequence[str] = OFFLINE_METRICS, **bootstrap: Any
) -> dict[str, dict[str, Any]]:
    """``{metric: spearman(...) + {"skipped": arms lacking it}}``: each offline metric's rank
    correlation with closed-loop success (successes / episodes over the arm's tasks) over the
    `results` (`ArmResult`s or their saved JSON dicts) that have both. A loss that predicts
    success correlates negatively, an accuracy positively."""
    arms = [_success_and_offline(r) for r in results]
    table = {}
    for metric in metrics:
        pairs = [
            (rate, float(offline[metric]))
            for rate, offline in arms
            if rate is not None
            and isinstance(offline.get(metric), int | float)
            and math.isfinite(offline[metric])
        ]
        x, y = zip(*pairs, strict=True) if pairs else ((), ())
        table[metric] = {**spearman(x, y, **bootstrap), "skipped": len(arms) - len(pairs)}
    return table


def correlation_text(table: Mapping[str, Mapping[str, Any]]) -> str:
    """The table `offline_correlations` returns, one line per metric."""
    lines = [f"{'offline metric':<20}{'n':>4}{'skipped':>9}  Spearman rho with success (95% CI)"]
    for metric, c in table.items():
        if c["rho"] is None:
            value = c["note"]
        else:
            low, high = c["ci95"] or (math.nan, math.nan)
            value = f"{c['rho']:+.2f} [{low:+.2f}, {high:+.2f}]"
            value += f"  ({c['note']})" if c["note"] else ""
        lines.append(f"{metric:<20}{c['n']:>4}{c['skipped']:>9}  {value}")
    return "\n".join(lines)

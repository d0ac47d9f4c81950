"""The transfer report's charts (PNG, matplotlib's Agg backend), from `transfer_summary` rows.

- `bar_chart`: one demonstration count; a group of bars per target, one bar per arm.
- `curve_chart`: several counts; per target, success against demonstrations for every arm (95%
  Wilson intervals, the zero-shot checkpoint as a dashed level), and under it each mode's paired
  gap to scratch with its t interval over seeds: where the lower panel clears zero, pretraining
  pays at that count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from octo_like.envs.transfer.plan import SCRATCH, ZERO_SHOT


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errors(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    return [
        [r["success_rate"] - r["ci95"][0] for r in rows],
        [r["ci95"][1] - r["success_rate"] for r in rows],
    ]


def bar_chart(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """A PNG: one group of bars per target, one bar per arm, 95% interval error bars."""
    plt = _pyplot()
    targets = list(dict.fromkeys(row["target"] for row in rows))
    arms = list(dict.fromkeys(row["mode"] for row in rows))
    width = 0.8 / max(len(arms), 1)
    figure, axis = plt.subplots(figsize=(2.2 * len(targets) + 2, 3.8))
    for i, arm in enumerate(arms):
        xs, chosen = [], []
        for j, target in enumerate(targets):
            row = next((r for r in rows if r["target"] == target and r["mode"] == arm), None)
            if row is not None:
                xs.append(j + (i - (len(arms) - 1) / 2) * width)
                chosen.append(row)
        rates = [r["success_rate"] for r in chosen]
        axis.bar(xs, rates, width, yerr=_errors(chosen), capsize=3, label=arm)
    axis.set_xticks(range(len(targets)), targets)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("closed-loop success (95% CI)")
    axis.set_title(title or "fine-tuned from pretraining vs trained from scratch")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def curve_chart(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """A PNG: per target (columns), success against demonstrations per arm (top) and each
    mode's paired gap to scratch (bottom; pooled where fewer than two seeds pair)."""
    plt = _pyplot()
    targets = list(dict.fromkeys(row["target"] for row in rows))
    counts = sorted({row["demos"] for row in rows if row["demos"]})
    figure, axes = plt.subplots(
        2, len(targets), figsize=(max(4.2 * len(targets), 6.0), 6.4), squeeze=False, sharex=True
    )
    for column, target in enumerate(targets):
        top, bottom = axes[0][column], axes[1][column]
        mine = [r for r in rows if r["target"] == target]
        for mode in dict.fromkeys(r["mode"] for r in mine):
            points = sorted((r for r in mine if r["mode"] == mode), key=lambda r: r["demos"])
            if mode == ZERO_SHOT:
                for r in points:
                    top.axhline(r["success_rate"], color="gray", linestyle="--", label=mode)
                    top.axhspan(*r["ci95"], color="gray", alpha=0.15)
                continue
            xs = [r["demos"] for r in points]
            rates = [r["success_rate"] for r in points]
            top.errorbar(xs, rates, yerr=_errors(points), capsize=3, marker="o", label=mode)
            if mode == SCRATCH:
                continue
            gaps = [(r["demos"], r["gap_to_scratch"]) for r in points if r.get("gap_to_scratch")]
            if not gaps:
                continue
            means, lows, highs = [], [], []
            for _, g in gaps:
                mean, (low, high) = (
                    (g["paired"]["mean"], g["paired"]["t_ci95"]) if g["paired"] else
                    (g["diff"], g["ci95"])
                )  # fmt: skip
                means.append(mean)
                lows.append(mean - low)
                highs.append(high - mean)
            bottom.errorbar([x for x, _ in gaps], means, yerr=[lows, highs], capsize=3,
                            marker="o", label=mode)  # fmt: skip
        bottom.axhline(0.0, color="black", linewidth=0.8)
        top.set_title(f"{target} ({mine[0]['variant']})")
        top.set_ylim(0, 1.05)
        for axis in (top, bottom):
            axis.set_xscale("log")
            axis.set_xticks(counts, [str(c) for c in counts])
            axis.minorticks_off()
        bottom.set_xlabel("demonstrations per task")
        if column == 0:
            top.set_ylabel("closed-loop success (95% CI)")
            bottom.set_ylabel("gap to scratch: paired t 95% CI\n(pooled where < 2 seeds)")
        top.legend(fontsize=7)
    figure.suptitle(title or "success against demonstrations: fine-tuned vs scratch", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

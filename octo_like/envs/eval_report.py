"""Evaluation results: per-task success with a 95% Wilson interval, episode length and policy
latency, as a table, one JSON line, and a bar chart."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    task: str
    episode: int
    seed: int
    success: bool
    length: int
    video: str | None = None
    final_distance: float | None = None  # metres from the object to its goal at the end


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sensible at 0/n and n/n, unlike +-1.96 SE)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _median(values: Sequence[float | None]) -> float | None:
    """Median of the known values (None when there are none)."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    middle = len(known) // 2
    return known[middle] if len(known) % 2 else (known[middle - 1] + known[middle]) / 2


@dataclasses.dataclass
class EvalReport:
    agent: str
    variant: str
    tasks: Sequence[str]
    episodes: list[EpisodeResult]
    seconds: float
    env_steps: int
    latency_ms: dict[str, Any] | None = None
    conditioning: str = "language"  # how the agent was told the task (evaluation.CONDITIONINGS)
    image_size: int | None = None  # side of the rendered images (None: the variant's own)
    instruction: str = "canonical"  # which words a language-conditioned agent heard

    def per_task(self) -> dict[str, dict[str, Any]]:
        rows = {}
        for task in [*self.tasks, "all"]:
            chosen = [e for e in self.episodes if task in ("all", e.task)]
            successes = sum(e.success for e in chosen)
            low, high = wilson_interval(successes, len(chosen))
            rows[task] = {
                "episodes": len(chosen),
                "successes": successes,
                "success_rate": successes / max(len(chosen), 1),
                "ci95": [round(low, 4), round(high, 4)],
                "mean_length": sum(e.length for e in chosen) / max(len(chosen), 1),
                "failure_final_distance": _median(
                    [e.final_distance for e in chosen if not e.success]
                ),
            }
        return rows

    def table(self) -> str:
        rows = self.per_task()
        width = max(24, *(len(task) for task in rows))  # MT50 names run to 25 characters
        lines = [
            f"{'task':<{width}} {'success':>9} {'rate':>6} {'95% CI':>15} {'mean len':>9}"
            f" {'miss cm':>8}",
            "-" * (width + 52),
        ]
        for task, row in rows.items():
            low, high = row["ci95"]
            miss = row["failure_final_distance"]
            lines.append(
                f"{task:<{width}} {row['successes']:>4}/{row['episodes']:<4} "
                f"{row['success_rate']:>6.2f} {f'[{low:.2f}, {high:.2f}]':>15} "
                f"{row['mean_length']:>9.1f} {'-' if miss is None else f'{100 * miss:.1f}':>8}"
            )
        lines.append("miss cm: median distance from object to goal at the end of failed episodes")
        rendered = f"{self.image_size} px" if self.image_size else "the variant's size"
        told = "" if self.instruction == "canonical" else f" ({self.instruction} instruction)"
        lines.append(f"conditioned on {self.conditioning}{told}; images rendered at {rendered}")
        lines.append(
            f"{self.env_steps} env steps in {self.seconds:.1f} s "
            f"({self.env_steps / max(self.seconds, 1e-9):.0f} steps/s)"
        )
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(
                "policy latency per batched call: "
                + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in lat.items()
                )  # fmt: skip
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "variant": self.variant,
            "conditioning": self.conditioning,
            "instruction": self.instruction,
            "image_size": self.image_size,
            "per_task": self.per_task(),
            "env_steps": self.env_steps,
            "seconds": round(self.seconds, 3),
            "env_steps_per_second": round(self.env_steps / max(self.seconds, 1e-9), 2),
            "policy_latency_ms": self.latency_ms,
            "videos": [e.video for e in self.episodes if e.video],
        }

    def json_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def bar_chart(self, path: str) -> str:
        """A PNG of success rate per task with 95% interval error bars."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.per_task()
        names = list(rows)
        rates = [rows[n]["success_rate"] for n in names]
        errors = [
            [r - rows[n]["ci95"][0] for n, r in zip(names, rates, strict=True)],
            [rows[n]["ci95"][1] - r for n, r in zip(names, rates, strict=True)],
        ]
        figure, axis = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
        axis.bar(names, rates, yerr=errors, capsize=4, color="tab:blue")
        axis.set_ylim(0, 1.05)
        axis.set_ylabel("success rate (95% CI)")
        axis.set_title(f"{self.agent} on MetaWorld ({self.variant}, {self.conditioning})")
        axis.tick_params(axis="x", rotation=30)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path

"""The transfer benchmark's plan and its arithmetic: does pretraining pay on new tasks and robots?

A *target* is what a user fine-tunes to: a task list on an embodiment variant (held-out tasks on
the pretraining robot, or a new robot). Every target gets the same arms: each fine-tuning mode
(``full``, ``head_only``, ...) and ``scratch`` (the same model, data, settings and steps with no
pretrained weight reused; `octo_like.training.finetune`). Every arm is trained once per seed and
evaluated closed-loop on the same scenes, so arms differ only by what they start from.

`summarize` pools each arm's episodes over seeds (success with a 95% Wilson interval, plus the
per-seed rates, whose spread is the seed-to-seed noise) and states each mode's gap to scratch with
a 95% interval (Newcombe's hybrid score interval for a difference of two proportions, on the
pooled episodes). Pure Python: `transfer_benchmark` runs the arms (scripts/benchmark_transfer.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from octo_like.envs.eval_report import wilson_interval
from octo_like.envs.tasks import parse_tasks
from octo_like.envs.variants import get_variant

SCRATCH = "scratch"
ZERO_SHOT = "zero_shot"  # the pretrained checkpoint itself, evaluated before any fine-tuning
OWN_TASKS = "own"  # the target of the zero-shot rows on a sample of pretraining tasks
FINETUNE_MODES = ("full", "head_only", "head_mlp_only", "lora")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Target:
    """Fine-tune to `tasks` on embodiment `variant`; `name` names its runs and table rows."""

    name: str
    variant: str
    tasks: tuple[str, ...]

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"target name {self.name!r}: use lower-case letters, digits, _ . -")
        get_variant(self.variant)
        object.__setattr__(self, "tasks", parse_tasks(self.tasks))

    @classmethod
    def parse(cls, text: str, default_variant: str = "default") -> Target:
        """``NAME=TASK,TASK[@VARIANT]``, e.g. ``heldout=drawer-close,button-press`` or
        ``metric7=reach,push@metric7``."""
        name, sep, rest = text.partition("=")
        if not sep or not rest:
            raise ValueError(f"target {text!r}: expected NAME=TASK,TASK[@VARIANT]")
        tasks, _, variant = rest.partition("@")
        return cls(name.strip(), variant.strip() or default_variant, parse_tasks(tasks))


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training run: `target` trained in `mode` (a fine-tuning mode or scratch) with `seed`."""

    target: Target
    mode: str
    seed: int

    @property
    def key(self) -> str:
        """Directory-safe identity, e.g. ``heldout/full/seed1``."""
        return f"{self.target.name}/{self.mode}/seed{self.seed}"


def check_held_out(
    targets: Sequence[Target], pretrained_tasks: Sequence[str], pretrained_variants: Sequence[str]
) -> None:
    """ValueError naming the target and task when a target asks to fine-tune, on an embodiment
    pretraining saw, to a task whose demonstrations were in pretraining: it would measure
    recall, not transfer. A new embodiment may redo pretraining tasks (a new robot, known
    tasks); the `own` target is the zero-shot sample of pretraining tasks."""
    seen = set(pretrained_tasks)
    for target in targets:
        if target.name == OWN_TASKS or target.variant not in pretrained_variants:
            continue
        leaked = [t for t in target.tasks if t in seen]
        if leaked:
            raise ValueError(
                f"target {target.name!r}: {', '.join(leaked)} on {target.variant!r} were in "
                "pretraining; hold them out of pretraining (--held_out) or pick other tasks"
            )


def plan(targets: Sequence[Target], modes: Sequence[str], seeds: Sequence[int]) -> list[Arm]:
    """Every (target, mode, seed), scratch included once per target and seed, seeds innermost
    last so a partial benchmark already has every arm of the first seed."""
    unknown = [m for m in modes if m not in FINETUNE_MODES]
    if unknown or not modes:
        raise ValueError(f"modes {list(modes)}: choose one or more of {FINETUNE_MODES}")
    names = [t.name for t in targets]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"targets need distinct names, got {names}")
    if OWN_TASKS in names:
        raise ValueError(f"target name {OWN_TASKS!r} is reserved for the pretraining-task rows")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    arms = []
    for seed in seeds:
        for target in targets:
            for mode in (*modes, SCRATCH):
                arms.append(Arm(target, mode, int(seed)))
    return arms


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """Closed-loop outcome of one arm: ``per_task = {task: (successes, episodes)}``."""

    arm: Arm
    per_task: dict[str, tuple[int, int]]
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def successes(self) -> int:
        return sum(s for s, _ in self.per_task.values())

    @property
    def episodes(self) -> int:
        return sum(n for _, n in self.per_task.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.arm.target.name,
            "variant": self.arm.target.variant,
            "tasks": list(self.arm.target.tasks),
            "mode": self.arm.mode,
            "seed": self.arm.seed,
            "per_task": {task: list(counts) for task, counts in self.per_task.items()},
            "train_seconds": round(self.train_seconds, 1),
            "eval_seconds": round(self.eval_seconds, 1),
        }

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> ArmResult:
        target = Target(blob["target"], blob["variant"], tuple(blob["tasks"]))
        per_task = {task: (int(s), int(n)) for task, (s, n) in blob["per_task"].items()}
        return cls(
            Arm(target, blob["mode"], int(blob["seed"])),
            per_task,
            float(blob.get("train_seconds", 0.0)),
            float(blob.get("eval_seconds", 0.0)),
        )


def newcombe_difference(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """(p1 - p2, low, high): Newcombe's hybrid score 95% interval of a difference of two
    independent proportions, from the two Wilson intervals (sensible near 0 and 1)."""
    p1, p2 = s1 / max(n1, 1), s2 / max(n2, 1)
    l1, u1 = wilson_interval(s1, n1)
    l2, u2 = wilson_interval(s2, n2)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, max(-1.0, low), min(1.0, high)


def summarize(results: Iterable[ArmResult]) -> list[dict[str, Any]]:
    """One row per (target, mode) in plan order: pooled success and interval, per-seed rates,
    per-task pooled counts, and (for modes) the gap to the target's scratch arm."""
    groups: dict[tuple[str, str], list[ArmResult]] = {}
    for result in results:
        groups.setdefault((result.arm.target.name, result.arm.mode), []).append(result)
    rows = []
    for (target, mode), members in groups.items():
        members.sort(key=lambda r: r.arm.seed)
        successes = sum(r.successes for r in members)
        episodes = sum(r.episodes for r in members)
        per_task: dict[str, list[int]] = {}
        for r in members:
            for task, (s, n) in r.per_task.items():
                counts = per_task.setdefault(task, [0, 0])
                counts[0] += s
                counts[1] += n
        rows.append(
            {
                "target": target,
                "variant": members[0].arm.target.variant,
                "mode": mode,
                "seeds": [r.arm.seed for r in members],
                "successes": successes,
                "episodes": episodes,
                "success_rate": successes / max(episodes, 1),
                "ci95": [round(x, 4) for x in wilson_interval(successes, episodes)],
                "seed_rates": [round(r.successes / max(r.episodes, 1), 4) for r in members],
                "per_task": {
                    task: {"successes": s, "episodes": n, "success_rate": s / max(n, 1)}
                    for task, (s, n) in per_task.items()
                },
            }
        )
    scratch = {row["target"]: row for row in rows if row["mode"] == SCRATCH}
    for row in rows:
        base = scratch.get(row["target"])
        if row["mode"] == SCRATCH or base is None:
            continue
        diff, low, high = newcombe_difference(
            row["successes"], row["episodes"], base["successes"], base["episodes"]
        )
        row["gap_to_scratch"] = {"diff": round(diff, 4), "ci95": [round(low, 4), round(high, 4)]}
    return rows


def verdict(row: dict[str, Any]) -> str:
    """How a mode's gap to scratch reads: beats / loses to scratch when its interval excludes
    zero, else no clear difference (the interval says how big a difference could hide)."""
    gap = row.get("gap_to_scratch")
    if gap is None:
        return ""
    low, high = gap["ci95"]
    if low > 0:
        return "beats scratch"
    if high < 0:
        return "worse than scratch"
    return "no clear difference"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Success +- interval per (target, arm), per-seed rates, and the gap to scratch."""
    header = (
        f"{'target':<14}{'variant':<9}{'arm':<15}{'success':>11}{'rate':>7}{'95% CI':>15}  "
        f"{'per seed':<20}{'gap to scratch (95% CI)':<30}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        low, high = row["ci95"]
        seeds = " ".join(f"{r:.2f}" for r in row["seed_rates"])
        gap = row.get("gap_to_scratch")
        gap_text = ""
        if gap is not None:
            g_low, g_high = gap["ci95"]
            gap_text = f"{gap['diff']:+.2f} [{g_low:+.2f}, {g_high:+.2f}] {verdict(row)}"
        lines.append(
            f"{row['target']:<14}{row['variant']:<9}{row['mode']:<15}"
            f"{row['successes']:>5}/{row['episodes']:<5}{row['success_rate']:>7.2f}"
            f"{f'[{low:.2f}, {high:.2f}]':>15}  {seeds:<20}{gap_text}"
        )
        tasks = row["per_task"]
        if len(tasks) > 1:
            lines.append(
                " " * 38
                + "  ".join(f"{t} {v['successes']}/{v['episodes']}" for t, v in tasks.items())
            )
    return "\n".join(lines)


def bar_chart(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """A PNG: one group of bars per target, one bar per arm, 95% interval error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(row["target"] for row in rows))
    arms = list(dict.fromkeys(row["mode"] for row in rows))
    width = 0.8 / max(len(arms), 1)
    figure, axis = plt.subplots(figsize=(2.2 * len(targets) + 2, 3.8))
    for i, arm in enumerate(arms):
        xs, rates, low_err, high_err = [], [], [], []
        for j, target in enumerate(targets):
            row = next((r for r in rows if r["target"] == target and r["mode"] == arm), None)
            if row is None:
                continue
            xs.append(j + (i - (len(arms) - 1) / 2) * width)
            rates.append(row["success_rate"])
            low_err.append(row["success_rate"] - row["ci95"][0])
            high_err.append(row["ci95"][1] - row["success_rate"])
        axis.bar(xs, rates, width, yerr=[low_err, high_err], capsize=3, label=arm)
    axis.set_xticks(range(len(targets)), targets)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("closed-loop success (95% CI)")
    axis.set_title(title or "fine-tuned from pretraining vs trained from scratch")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def json_line(rows: Sequence[dict[str, Any]], **context: Any) -> str:
    """The benchmark's one JSON line: the context (budget, seeds, pretrained checkpoint) + rows."""
    return json.dumps({**context, "rows": list(rows)}, sort_keys=True)

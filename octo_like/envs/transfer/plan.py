"""The transfer benchmark's plan and its arithmetic: does pretraining pay on new tasks and robots?

A *target* is what a user fine-tunes to: a task list on an embodiment variant (held-out tasks on
the pretraining robot, or a new robot). Every target gets the same arms: each fine-tuning mode
(``full``, ``head_only``, ...), each `Recipe` (a mode with extra finetune.py flags) and
``scratch`` (the same model, data, settings and steps with no pretrained weight reused;
`octo_like.training.finetuning.finetune`). Every arm is trained once per seed and
demonstration count and evaluated closed-loop on the same scenes; both arms of a seed read the
same demonstrations in the same order (`demo_subsets`), so arms differ only by what they start
from. `transfer_summary` reads the results; `newcombe_difference` is its pooled interval.
Pure Python: `transfer_benchmark` runs the arms (scripts/benchmark_transfer.py).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
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
    """One training run: `target` trained in `mode` (a fine-tuning mode or scratch) with `seed`
    on `demos` demonstrations per task (0: none, the zero-shot rows)."""

    target: Target
    mode: str
    seed: int
    demos: int = 0

    @property
    def key(self) -> str:
        """Directory-safe identity, e.g. ``heldout/10demos/full/seed1`` (zero-shot rows, which
        train on nothing: ``heldout/zero_shot/seed0``)."""
        demos = f"{self.demos}demos/" if self.demos else ""
        return f"{self.target.name}/{demos}{self.mode}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A fine-tuning `mode` with extra finetune.py `flags`, a recipe run as an arm of its own named
    `name` (e.g. ``relang``: ``full`` with the language encoder re-initialized). Every recipe
    pairs with the same scratch arm as the modes, and with its base mode's arm of the same seed:
    one benchmark compares recipes at the cost of one scratch arm per seed, and the recipe's
    paired difference to its base mode is the test of what its flags change."""

    name: str
    mode: str
    flags: tuple[str, ...]

    def __post_init__(self):
        if not _NAME.match(self.name) or self.name in (*FINETUNE_MODES, SCRATCH, ZERO_SHOT):
            raise ValueError(
                f"recipe name {self.name!r}: use lower-case letters, digits, _ . - and not a "
                f"mode's name ({', '.join((*FINETUNE_MODES, SCRATCH, ZERO_SHOT))})"
            )
        if self.mode not in FINETUNE_MODES:
            raise ValueError(
                f"recipe {self.name!r}: unknown mode {self.mode!r}; choose from {FINETUNE_MODES}"
            )
        if not self.flags or not all(f.startswith("--") for f in self.flags):
            raise ValueError(
                f"recipe {self.name!r}: needs finetune.py flags (--config.KEY=VALUE), got "
                f"{list(self.flags)}"
            )


def parse_recipes(texts: Sequence[str]) -> dict[str, Recipe]:
    """``NAME=MODE:FLAG`` each (repeat a name to give it several flags), e.g.
    ``relang=full:--config.reinitialize=('^language_encoder/',)``; by name, in the order
    first given. The same name with two modes is an error."""
    modes: dict[str, str] = {}
    flags: dict[str, list[str]] = {}
    for text in texts:
        name, sep, rest = text.partition("=")
        mode, colon, flag = rest.partition(":")
        name, mode, flag = name.strip(), mode.strip(), flag.strip()
        if not sep or not colon or not name or not mode or not flag:
            raise ValueError(f"recipe {text!r}: expected NAME=MODE:FLAG")
        if modes.setdefault(name, mode) != mode:
            raise ValueError(f"recipe {name!r} given two modes: {modes[name]!r} and {mode!r}")
        flags.setdefault(name, []).append(flag)
    return {name: Recipe(name, modes[name], tuple(flags[name])) for name in modes}


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


def plan(
    targets: Sequence[Target],
    modes: Sequence[str],
    seeds: Sequence[int],
    demo_counts: Sequence[int] = (50,),
    recipes: Sequence[str] = (),
) -> list[Arm]:
    """Every (seed, demonstration count, target, mode), then each `recipes` name (a
    `Recipe`'s), scratch included once per target, count and seed; seeds outermost, so a
    partial benchmark already has every arm of the first seed (a whole curve, all arms:
    paired)."""
    unknown = [m for m in modes if m not in FINETUNE_MODES]
    if unknown or not modes:
        raise ValueError(f"modes {list(modes)}: choose one or more of {FINETUNE_MODES}")
    if len(set(recipes)) != len(recipes) or set(recipes) & {*FINETUNE_MODES, SCRATCH}:
        raise ValueError(f"recipes {list(recipes)}: distinct names, none a mode's")
    names = [t.name for t in targets]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"targets need distinct names, got {names}")
    if OWN_TASKS in names:
        raise ValueError(f"target name {OWN_TASKS!r} is reserved for the pretraining-task rows")
    if len(set(seeds)) != len(seeds) or not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct, >= 0 and at least one, got {list(seeds)}")
    if not demo_counts or any(int(c) != c or c < 1 for c in demo_counts):
        raise ValueError(f"demonstration counts must be positive integers, got {demo_counts}")
    arms = []
    for seed in seeds:
        for count in sorted(set(demo_counts)):
            for target in targets:
                for mode in (*modes, *recipes, SCRATCH):
                    arms.append(Arm(target, mode, int(seed), int(count)))
    return arms


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """Closed-loop outcome of one arm: ``per_task = {task: (successes, episodes)}``."""

    arm: Arm
    per_task: dict[str, tuple[int, int]]
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # {"train"/"evaluate": {"commit": ..., "cpu": ...}}: where each stage ran (`provenance`).
    provenance: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # What made it: the finetune.py command line (which names the demonstrations), or the
    # zero-shot checkpoint; a saved result is reused only for the same (`transfer_arms`).
    command: tuple[str, ...] = ()
    step: int | None = None  # the checkpoint step evaluated (None: not recorded, or zero-shot)
    # That step's validation metrics and training loss (`transfer_offline.offline_at`); None
    # without a validation entry there (no --val_demos, zero-shot, saved before it was kept).
    offline: dict[str, float] | None = None

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
            "demos": self.arm.demos,
            "per_task": {task: list(counts) for task, counts in self.per_task.items()},
            "train_seconds": round(self.train_seconds, 1),
            "eval_seconds": round(self.eval_seconds, 1),
            "provenance": self.provenance,
            "command": list(self.command),
            "step": self.step,
            "offline": self.offline,
        }

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> ArmResult:
        target = Target(blob["target"], blob["variant"], tuple(blob["tasks"]))
        per_task = {task: (int(s), int(n)) for task, (s, n) in blob["per_task"].items()}
        return cls(
            Arm(target, blob["mode"], int(blob["seed"]), int(blob.get("demos", 0))),
            per_task,
            float(blob.get("train_seconds", 0.0)),
            float(blob.get("eval_seconds", 0.0)),
            dict(blob.get("provenance", {})),
            tuple(blob.get("command", ())),
            None if blob.get("step") is None else int(blob["step"]),
            dict(blob["offline"]) if blob.get("offline") else None,
        )

    def provenance_records(self) -> list[dict[str, str]]:
        """One record per stage (training, evaluation), each named by the arm and stage; one
        record without commit and CPU when none was kept (saved before results recorded it)."""
        named = [{**r, "name": f"{self.arm.key} ({stage})"} for stage, r in self.provenance.items()]
        return named or [{"name": self.arm.key}]


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

"""What the transfer benchmark's pretraining saw, and which targets would leak into it.

A benchmark that fine-tunes, on an embodiment pretraining saw, to a task pretraining had
demonstrations of measures recall, not transfer: `check_targets` refuses it. To check before
any work, the benchmark needs the *scope* of its pretraining (the tasks on each embodiment):
from the train.py command it would run (`planned_scope`), or from an existing checkpoint's run
configuration (`checkpoint_scope`). `dry_run` prints both, with nothing collected or trained
(scripts/transfer_pretraining.py).

The benchmark runs its pretraining and arms through the user's own entry points (train.py,
finetune.py), so the commands it logs are the ones a user would run. The package imports no
entry point: the entry scripts hand them in as `EntryPoints`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, NamedTuple

from octo_like.envs.tasks import TASKS, expand_tasks, pretraining_tasks
from octo_like.envs.transfer.plan import Target, check_held_out
from octo_like.envs.transfer.pretraining_runs import run_args
from octo_like.envs.variants import dataset_name_of, get_variant, variant_of_dataset

log = logging.getLogger("benchmark_transfer")  # one logger name for the benchmark's lines


@dataclasses.dataclass(frozen=True)
class EntryPoints:
    """The programs the benchmark trains with: `train` (train.py) and `finetune` (finetune.py),
    each with ``parse_command_line(argv)`` and ``main(config, workdir, ...)``, and `config_dir`,
    the configs/ directory their commands name. A dry run needs no `finetune`. (Rows are
    evaluated through `octo_like.envs.evaluate_cli`, scripts/evaluate.py's own parser.)"""

    config_dir: str
    train: Any
    finetune: Any = None


class PretrainingScope(NamedTuple):
    """What pretraining had demonstrations of: `tasks` on each of `variants` (embodiments).
    Unknown (None) for a checkpoint whose run configuration is not beside it."""

    tasks: tuple[str, ...] | None
    variants: tuple[str, ...]


def pretrain_argv(args, config_dir: str) -> list[str]:
    """The train.py command line of the pretraining run: the --pretrain_config preset, with
    only the settings given on the benchmark's command line changed."""
    steps = args.pretrain_steps
    return [
        "train.py",
        f"--config={config_dir}/pretrain.py:{args.pretrain_config}",
        f"--workdir={os.path.join(args.workdir, 'pretrain')}",
        *(
            [f"--config.num_steps={steps}", f"--config.checkpoint.save_every={steps}"]
            if steps
            else []
        ),
        *([f"--config.simulation.tasks={args.pretrain_tasks}"] if args.pretrain_tasks else []),
        *(
            [f"--config.simulation.episodes_per_task={args.pretrain_demos}"]
            if args.pretrain_demos
            else []
        ),
        *([f"--config.simulation.held_out={args.held_out}"] if args.held_out else []),
        *args.pretrain_arg,
    ]


def scope_of_config(config: dict) -> PretrainingScope:
    """The scope of a train.py configuration (a dict, as config.json holds it)."""
    from octo_like.data.oxe.mixes import resolve_mix

    mix = config.get("mix", "")
    try:
        members = [spec.name for spec, _ in resolve_mix(mix)]
    except (KeyError, ValueError):
        members = []
    variants = tuple(v.name for v in map(variant_of_dataset, members) if v is not None)
    simulation = config.get("simulation") or {}
    if not variants or config.get("data_dir") or "tasks" not in simulation:
        return PretrainingScope(None, variants)
    return PretrainingScope(
        pretraining_tasks(simulation["tasks"], simulation.get("held_out", "")), variants
    )


def planned_scope(args, programs: EntryPoints) -> PretrainingScope:
    """The scope of the pretraining this benchmark would run (parsed, not run)."""
    config, *_ = programs.train.parse_command_line(pretrain_argv(args, programs.config_dir))
    return scope_of_config(config.to_dict())


def checkpoint_scope(checkpoint_dir: str, dataset_names: tuple[str, ...]) -> PretrainingScope:
    """The scope of an existing checkpoint: its run's config.json (beside ``checkpoints/``),
    else only the embodiments its dataset statistics name (tasks unknown)."""
    for candidate in (
        os.path.join(os.path.dirname(os.path.normpath(checkpoint_dir)), "config.json"),
        os.path.join(checkpoint_dir, "config.json"),
    ):
        if os.path.exists(candidate):
            with open(candidate) as f:
                scope = scope_of_config(json.load(f))
            if scope.variants:
                return scope
    variants = tuple(v.name for v in map(variant_of_dataset, dataset_names) if v is not None)
    return PretrainingScope(None, variants)


def check_targets(targets, scope: PretrainingScope, source: str) -> None:
    """Refuses targets that leak (`transfer.check_held_out`); warns when the checkpoint's tasks
    are unknown, so nothing can be checked."""
    if scope.tasks is None:
        log.warning("%s: its pretraining tasks are unknown (no config.json beside it); "
                    "held-out targets cannot be checked against them", source)  # fmt: skip
        return
    check_held_out(targets, scope.tasks, scope.variants)


def own_task_sample(scope: PretrainingScope, requested: str | None, count: int = 5):
    """--own_tasks (which must be pretraining tasks), else `count` pretraining tasks spread
    evenly over its list."""
    if requested:
        tasks = expand_tasks(requested)
        unseen = [t for t in tasks if scope.tasks is not None and t not in scope.tasks]
        if unseen:
            raise ValueError(f"--own_tasks {', '.join(unseen)}: not among the pretraining tasks")
        return tasks
    if not scope.tasks:
        return ()
    step = max(1, len(scope.tasks) // count)
    return scope.tasks[::step][:count]


def zero_shot_dataset(info, variant_name: str) -> tuple[str | None, str]:
    """(dataset whose statistics the pretrained model acts with in `variant_name`, or None;
    why not). It needs that embodiment's statistics, action dim and cameras."""
    variant = get_variant(variant_name)
    name = dataset_name_of(variant_name)
    if name not in info.dataset_names:
        return None, f"pretraining never saw {variant_name!r} (no statistics for {name})"
    if variant.action_dim != info.config.action_dim:
        return None, f"{variant.action_dim}-dim actions vs the model's {info.config.action_dim}"
    missing = set(variant.cameras) - set(info.config.cameras)
    if missing:
        return None, f"cameras {sorted(missing)} the model lacks"
    return name, ""


def ensure_pretrained(args, programs: EntryPoints) -> str:
    """The checkpoint directory the arms start from: --pretrained, else pretrain (resuming a
    pretraining run of this workdir, which returns at once when it is finished)."""
    if args.pretrained:
        return os.path.abspath(os.path.expanduser(args.pretrained))
    argv = pretrain_argv(args, programs.config_dir)
    log.info("pretraining: %s", " ".join(argv))
    config, workdir, overwrite, stop = programs.train.parse_command_line(argv)
    programs.train.main(config, workdir, overwrite=overwrite, stop_at_step=stop)
    return os.path.join(workdir, "checkpoints")


def pretrained_variant(info) -> str:
    """The embodiment variant a checkpoint (`read_pretrained`'s PretrainedInfo) was trained on:
    its first simulated dataset's; `default` when it names none."""
    for name in info.dataset_names:
        variant = variant_of_dataset(name)
        if variant is not None:
            return variant.name
    return "default"


def dry_run(args, programs: EntryPoints) -> PretrainingScope | list[PretrainingScope]:
    """Prints the train.py command the benchmark would run (or the --pretrained checkpoint),
    the tasks and embodiments pretraining sees, what it never sees, and whether each --target
    would be refused; collects and trains nothing. Several pretraining runs: each in turn, and
    the list of their scopes."""
    from octo_like.training.finetuning.finetune_config import read_pretrained

    if len(args.pretraining_runs) > 1:
        scopes = []
        for run in args.pretraining_runs:
            print(f"pretraining run {run.name}:")
            scopes.append(dry_run(run_args(args, run, several=True), programs))
        return scopes
    if args.pretrained:
        info = read_pretrained(os.path.expanduser(args.pretrained))
        scope = checkpoint_scope(info.checkpoint_dir, info.dataset_names)
        own = pretrained_variant(info)
        print(f"checkpoint {info.checkpoint_dir} (step {info.step})")
    else:
        scope = planned_scope(args, programs)
        own = scope.variants[0] if scope.variants else "default"
        print("pretraining command:\n  " + " ".join(pretrain_argv(args, programs.config_dir)))
    print(f"embodiments: {', '.join(scope.variants) or 'none simulated'}")
    if scope.tasks is None:
        print("tasks: unknown (no config.json beside the checkpoint)")
    else:
        held = [t for t in TASKS if t not in scope.tasks]
        print(f"tasks ({len(scope.tasks)}): {', '.join(scope.tasks)}")
        print(f"never in pretraining ({len(held)}): {', '.join(held)}")
    for text in args.target:
        target = Target.parse(text, default_variant=own)
        try:
            check_targets([target], scope, args.pretrained or "the pretraining run")
            print(f"target {target.name} ({', '.join(target.tasks)} @ {target.variant}): ok")
        except ValueError as e:
            print(f"target {target.name}: refused: {e}")
    return scope

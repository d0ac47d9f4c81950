"""Does pretraining pay? The transfer benchmark's flags and its run, start to finish.

`run` pretrains (or reuses --pretrained), refuses targets that leak into pretraining before any
work, evaluates the pretrained checkpoint zero-shot, collects each target's demonstrations,
trains and evaluates every arm (`transfer_arms`) and writes the report (`transfer_report`).
With several pretraining runs (--pretrained A,B,C or --pretrain_seeds 0,1,2: `pretraining_runs`)
it does that once per run, in the run's own sub-workdir, sharing the collected demonstrations and
(where they read no pretrained weight) the first run's scratch arms, then writes the pooled
report (`pretraining_report`). scripts/benchmark_transfer.py is its command line (the run's steps
are in that docstring); scripts/transfer_pretraining.py takes the same flags for a dry run
(`transfer_scope.dry_run`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, NamedTuple

from octo_like.envs.evaluation import INSTRUCTIONS
from octo_like.envs.tasks import TASKS
from octo_like.envs.transfer import plan, provenance
from octo_like.envs.transfer.demo_subsets import plan_splits
from octo_like.envs.transfer.plan import ArmResult
from octo_like.envs.transfer.pretraining_report import RunResults, write_pooled_report
from octo_like.envs.transfer.pretraining_runs import (
    parse_pretraining_runs,
    run_args,
    scratch_sharing,
)
from octo_like.envs.transfer.transfer_arms import (
    ArmSetup,
    check_arm_commands,
    check_saved_provenance,
    collect_target_data,
    evaluation_suffix,
    pretrained_fingerprint,
    run_arm,
    run_zero_shot,
)
from octo_like.envs.transfer.transfer_report import write_report
from octo_like.envs.transfer.transfer_scope import (
    EntryPoints,
    check_targets,
    checkpoint_scope,
    ensure_pretrained,
    own_task_sample,
    planned_scope,
    pretrained_variant,
)
from octo_like.envs.variants import dataset_name_of

log = logging.getLogger("benchmark_transfer")  # one logger name for the benchmark's lines


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    """The benchmark's command line (also the dry run's); --workdir made absolute."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--pretrained", default="",
        help="checkpoint dir to reuse (else pretrain); several, separated by commas, run the "
        "benchmark once per checkpoint and pool them (WORKDIR/pretraining/run<i>/)",
    )  # fmt: skip
    parser.add_argument(
        "--pretrain_seeds", default=None,
        help="pretrain once per seed (train.py --config.seed=K), e.g. 0,1,2: the benchmark runs "
        "once per pretraining run and pools them (WORKDIR/pretraining/seed<K>/)",
    )  # fmt: skip
    parser.add_argument(
        "--pretrain_config", default="laptop", help="configs/pretrain.py preset, e.g. laptop_broad"
    )
    parser.add_argument(
        "--pretrain_tasks", default=None, help="tasks, family:NAME or all (default: the preset's)"
    )
    parser.add_argument(
        "--held_out", default="", help="tasks / family:NAME kept out of pretraining entirely"
    )
    parser.add_argument("--pretrain_demos", type=int, default=None, help="per task (preset's)")
    parser.add_argument("--pretrain_steps", type=int, default=None, help="(default: preset's)")
    parser.add_argument(
        "--pretrain_arg", action="append", default=[], help="extra train.py flag (repeatable)"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="NAME=TASK,TASK[@VARIANT] (repeatable; default: held-out tasks, metric7 and wrist)",
    )
    parser.add_argument("--modes", default="full,head_only", help="fine-tuning modes (+scratch)")
    parser.add_argument(
        "--demos",
        default="50",
        help="demonstrations per target task; several (5,10,25,50) measure a curve, each seed's "
        "smaller sets nested in its larger ones (the largest is collected)",
    )
    parser.add_argument(
        "--collect_demos", type=int, default=None,
        help="demonstrations per task to collect (default: the largest --demos): a run of a "
        "curve's first counts that collects its last draws the same subsets as the whole curve",
    )  # fmt: skip
    parser.add_argument("--val_demos", type=int, default=2, help="validation episodes per task")
    parser.add_argument(
        "--data_dir", default=None,
        help="where targets' demonstrations are collected (default: WORKDIR/data): benchmarks "
        "of several recipes, one workdir each, can share one collection",
    )  # fmt: skip
    parser.add_argument("--collect_seed", type=int, default=1, help="seed of the target demos")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of every arm")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--finetune_arg", action="append", default=[], help="extra finetune.py flag, every arm"
    )
    parser.add_argument(
        "--recipe", action="append", default=[],
        help="NAME=MODE:FLAG, e.g. relang=full:--config.reinitialize=('^language_encoder/',): "
        "an arm NAME beside the modes, MODE with the extra finetune.py FLAG (repeat NAME for "
        "more flags), paired with scratch and with MODE's arm of each seed",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint_every", type=int, default=None,
        help="steps between each arm's checkpoints and validation losses (default: --steps)",
    )  # fmt: skip
    parser.add_argument(
        "--select", choices=("last", "val_loss"), default="last",
        help="the checkpoint evaluated: the last, or the lowest validation loss among those saved",
    )  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval_episodes", type=int, default=20, help="per task, arm and seed")
    # How every arm (and the zero-shot rows) executes its chunks: the same for all.
    parser.add_argument("--max_steps", type=int, default=150, help="per evaluation episode")
    parser.add_argument("--execution", choices=("receding", "ensemble"), default="receding")
    parser.add_argument(
        "--exec_horizon", type=int, default=None, help="receding: actions per chunk (default H)"
    )
    parser.add_argument("--ensemble_decay", type=float, default=0.0)
    parser.add_argument(
        "--instruction", choices=INSTRUCTIONS, default="canonical",
        help="what every row hears: each task's first phrasing, its second, or nothing",
    )  # fmt: skip
    parser.add_argument(
        "--own_tasks",
        default=None,
        help="pretraining tasks to evaluate the pretrained checkpoint on (default: 5 of them)",
    )
    parser.add_argument("--no_zero_shot", action="store_true", help="skip the zero-shot rows")
    parser.add_argument(
        "--no_crop", action="store_true", help="no random crop on the primary camera (fixed views)"
    )
    parser.add_argument("--eval_seed", type=int, default=0, help="scene seed (same for all arms)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gl", choices=("egl", "osmesa"), default=None)
    parser.add_argument(
        "--report", default=None,
        help="the report's file name, without .txt/.png/.jsonl (default: transfer, plus "
        "-INSTRUCTION and -SELECT where not canonical/last)",
    )  # fmt: skip
    parser.add_argument(
        "--allow_mixed_provenance",
        action="store_true",
        help="report arms of several commits or CPU models (the header then says MIXED)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.workdir = os.path.abspath(os.path.expanduser(args.workdir))
    data_dir = args.data_dir or os.path.join(args.workdir, "data")
    args.data_dir = os.path.abspath(os.path.expanduser(data_dir))
    try:
        args.demo_counts = tuple(sorted({int(c) for c in args.demos.split(",") if c.strip()}))
    except ValueError:
        parser.error(f"--demos takes whole numbers separated by commas, got {args.demos!r}")
    if not args.demo_counts or args.demo_counts[0] < 1:
        parser.error(f"--demos needs positive counts, got {args.demos!r}")
    # Collected per task; every count is a subset. The subsets depend on how many were
    # collected, not on the counts asked for (`demo_subsets`).
    args.demos = args.collect_demos or args.demo_counts[-1]
    every = args.checkpoint_every
    if every is not None and not (0 < every <= args.steps and args.steps % every == 0):
        parser.error(f"--checkpoint_every {every} must divide --steps {args.steps}")
    if args.select != "last" and every is None:
        parser.error(f"--select {args.select} chooses among checkpoints: set --checkpoint_every")
    try:
        args.recipes = plan.parse_recipes(args.recipe)
    except ValueError as e:
        parser.error(str(e))
    if args.report is None:  # reports of other evaluations of the same arms sit beside it
        args.report = "transfer" + evaluation_suffix(args)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.report):
        parser.error(f"--report takes a file name (letters, digits, _ . -), got {args.report!r}")
    if args.demos < args.demo_counts[-1]:
        parser.error(f"--collect_demos {args.demos} is below the largest --demos count")
    try:
        runs = parse_pretraining_runs(args.pretrained, args.pretrain_seeds, args.pretrain_arg)
    except ValueError as e:
        parser.error(str(e))
    if len(runs) == 1:  # today's benchmark, in the workdir itself
        return run_args(args, runs[0], several=False)
    if len([s for s in args.seeds.split(",") if s.strip()]) < 2:
        parser.error(
            f"{len(runs)} pretraining runs: their pooled report tells pretraining from "
            "fine-tuning variance over at least 2 --seeds"
        )
    args.pretraining_runs = runs
    return args


def default_targets(pretrain_tasks: tuple[str, ...]) -> list[str]:
    """Three MT50 tasks pretraining never saw (if any), and two new embodiments on two
    pretraining tasks (a new robot doing known tasks)."""
    unseen = [t for t in TASKS if t not in pretrain_tasks][:3]
    known = ",".join(pretrain_tasks[:2])
    return [
        *([f"heldout={','.join(unseen)}"] if unseen else []),
        f"metric7={known}@metric7",
        f"wrist={known}@wrist",
    ]


class CheckedRun(NamedTuple):
    """One pretraining run's benchmark, checked before any work (`check_run`): its `targets`,
    `seeds` and `arms` (plan order), the `zero_shot_targets`, this process's provenance `here`
    and the --pretrained checkpoint's `read_pretrained` info (`reused`; None: pretrained here)."""

    targets: list[plan.Target]
    seeds: list[int]
    arms: list[plan.Arm]
    zero_shot_targets: list[plan.Target]
    here: dict[str, str]
    reused: Any


class RunOutcome(NamedTuple):
    """One pretraining run's arms done (`run_arms`): the checkpoint they started from, its
    fingerprint, every row's result (plan order) and each target's demonstration subsets."""

    pretrained: str
    fingerprint: str
    results: list[ArmResult]
    splits: dict[str, dict[tuple[int, int], str]]


def check_run(args: argparse.Namespace, programs: EntryPoints) -> CheckedRun:
    """Targets, modes and seeds of one pretraining run's benchmark checked (leaks included),
    each arm's command parsed and saved results' provenance checked, before anything is
    trained; creates the workdir."""
    from octo_like.training.finetuning.finetune_config import read_pretrained

    # Held-out tasks without @VARIANT run on the pretraining robot: the checkpoint's own variant.
    reused = read_pretrained(ensure_pretrained(args, programs)) if args.pretrained else None
    if reused is not None:
        scope = checkpoint_scope(reused.checkpoint_dir, reused.dataset_names)
        own = pretrained_variant(reused)
    else:
        scope = planned_scope(args, programs)
        own = scope.variants[0] if scope.variants else "default"
    targets = [
        plan.Target.parse(t, default_variant=own)
        for t in (args.target or default_targets(scope.tasks or ()))
    ]
    check_targets(targets, scope, args.pretrained or "the pretraining run")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    # Validated, and each mode's finetune.py command parsed, before any work.
    arms = plan.plan(targets, modes, seeds, args.demo_counts, list(args.recipes))
    check_arm_commands(args, arms, programs)
    own_tasks = own_task_sample(scope, args.own_tasks)
    own_target = plan.Target(plan.OWN_TASKS, own, own_tasks) if own_tasks else None
    zero_shot_targets = [] if args.no_zero_shot else targets + ([own_target] if own_target else [])
    here = provenance.current()
    log.info("this process: commit %s on %s", here["commit"], here["cpu"])
    zero_shot_arms = [plan.Arm(t, plan.ZERO_SHOT, 0) for t in zero_shot_targets]
    check_saved_provenance(args, [*zero_shot_arms, *arms], here)
    os.makedirs(args.workdir, exist_ok=True)
    return CheckedRun(targets, seeds, arms, zero_shot_targets, here, reused)


def pretrain(args: argparse.Namespace, programs: EntryPoints, checked: CheckedRun):
    """(checkpoint directory, its `read_pretrained` info) of the run: --pretrained, or pretrained
    here (resumed if interrupted; at once if finished), whose tasks are checked again now."""
    from octo_like.training.finetuning.finetune_config import read_pretrained

    pretrained = ensure_pretrained(args, programs)
    info = checked.reused or read_pretrained(pretrained)
    if checked.reused is None:  # pretrained here: what it actually saw is now on disk
        check_targets(checked.targets, checkpoint_scope(pretrained, info.dataset_names), pretrained)
    return pretrained, info


def run_arms(
    args: argparse.Namespace,
    programs: EntryPoints,
    checked: CheckedRun,
    pretrained: str,
    info,
    scratch_from: RunOutcome | None = None,
) -> RunOutcome:
    """The zero-shot rows and every arm of one pretraining run (each result saved, or reused
    when saved before). `scratch_from`: another run whose scratch arms stand for this run's
    (not trained here), refused if its demonstration subsets differ from this run's."""
    fingerprint = pretrained_fingerprint(info)
    setup = ArmSetup(pretrained, tuple(info.config.cameras), programs, checked.here, fingerprint)
    results = []
    for target in checked.zero_shot_targets:
        result = run_zero_shot(args, target, info, setup)
        results += [result] if result is not None else []
    data_roots = {t.name: collect_target_data(args, t) for t in checked.targets}
    splits = {
        t.name: plan_splits(
            data_roots[t.name],
            dataset_name_of(t.variant),
            args.demo_counts,
            checked.seeds,
            record=os.path.join(args.workdir, "demo_subsets", f"{t.name}.json"),
        )
        for t in checked.targets
    }
    shared = {}
    if scratch_from is not None:
        if splits != scratch_from.splits:
            raise ValueError(
                f"{args.workdir}: its demonstration subsets differ from those of the scratch "
                f"arms it would share ({scratch_from.pretrained}'s): one --data_dir for all runs"
            )
        shared = {
            (r.arm.target.name, r.arm.demos, r.arm.seed): r
            for r in scratch_from.results
            if r.arm.mode == plan.SCRATCH
        }
    for i, arm in enumerate(checked.arms):
        if shared and arm.mode == plan.SCRATCH:
            log.info("arm %d/%d: %s: shared, of %s", i + 1, len(checked.arms), arm.key,
                     scratch_from.pretrained)  # fmt: skip
            results.append(shared[(arm.target.name, arm.demos, arm.seed)])
            continue
        log.info("arm %d/%d: %s", i + 1, len(checked.arms), arm.key)
        split = splits[arm.target.name][(arm.seed, arm.demos)]
        results.append(run_arm(args, arm, setup, data_roots[arm.target.name], split))
    return RunOutcome(pretrained, fingerprint, results, splits)


def run(args: argparse.Namespace, programs: EntryPoints) -> list[dict]:
    """The whole benchmark for `parse_args`'s `args`; returns the report's summary rows (with
    several pretraining runs: the pooled report's rows). Targets, modes and seeds are checked
    (leaks included) before anything is trained."""
    if len(args.pretraining_runs) > 1:
        return run_pretraining_runs(args, programs)
    checked = check_run(args, programs)
    outcome = run_arms(args, programs, checked, *pretrain(args, programs, checked))
    pretrained = f"{outcome.pretrained} ({outcome.fingerprint})"
    return write_report(args, outcome.results, pretrained, checked.seeds)


def run_pretraining_runs(args: argparse.Namespace, programs: EntryPoints) -> list[dict]:
    """Today's benchmark once per pretraining run, each in ``<workdir>/pretraining/<run>/``
    with its own results and report, then the pooled report (`write_pooled_report`). Every
    run is checked before any work, then every run pretrained (or its checkpoint read), then
    each run's arms: scratch only under the first when `scratch_sharing` allows. A rerun
    reuses every saved result, so an interrupted benchmark resumes where it stopped."""
    runs = args.pretraining_runs
    arguments = [run_args(args, run, several=True) for run in runs]
    checks = [check_run(own, programs) for own in arguments]
    if len({tuple(arm.key for arm in check.arms) for check in checks}) > 1:
        raise ValueError(
            "the pretraining runs plan different arms (their default targets differ): name the "
            "targets (--target)"
        )
    checkpoints = [
        pretrain(own, programs, check) for own, check in zip(arguments, checks, strict=True)
    ]
    sharing = scratch_sharing(runs, [info for _, info in checkpoints], args.finetune_arg)
    log.info("scratch: %s", sharing.text)
    outcomes: list[RunOutcome] = []
    for i, (run, own, check, (path, info)) in enumerate(
        zip(runs, arguments, checks, checkpoints, strict=True)
    ):
        log.info("pretraining run %s (%d/%d): %s", run.name, i + 1, len(runs), path)
        scratch_from = outcomes[0] if sharing.shared and i else None
        outcome = run_arms(own, programs, check, path, info, scratch_from)
        label = f"{path} ({outcome.fingerprint})"
        if scratch_from is not None:
            label += f"; scratch arms: {runs[0].name}'s (shared)"
        write_report(own, outcome.results, label, check.seeds)
        outcomes.append(outcome)
    finished = [
        RunResults(run.name, outcome.pretrained, outcome.fingerprint, outcome.results)
        for run, outcome in zip(runs, outcomes, strict=True)
    ]
    return write_pooled_report(args, finished, checks[0].seeds, sharing.text)

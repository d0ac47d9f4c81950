"""Does pretraining pay? Fine-tuning vs training from scratch on held-out tasks and new robots.

    python scripts/benchmark_transfer.py --workdir runs/transfer \
        --pretrain_config laptop_broad --held_out family:door,family:coffee,family:plate \
        --target test=door-open,door-close,coffee-button,coffee-push,plate-slide \
        --target metric7=drawer-open,button-press-topdown@metric7 \
        --modes full --demos 50 --steps 1000 --seeds 0,1,2 --eval_episodes 20 --exec_horizon 2

1. Pretrains with `train.py` (configs/pretrain.py:--pretrain_config, minus the --held_out tasks
   and task families, with any --pretrain_arg=--config.KEY=VALUE) unless --pretrained names a
   checkpoint to reuse; a finished pretraining in the workdir is reused too. A target that
   would fine-tune, on an embodiment pretraining saw, to a task pretraining had demonstrations
   of is refused (that measures recall, not transfer).
2. Collects --demos scripted-expert demonstrations per task of each --target
   (``NAME=TASK,TASK[@VARIANT]``; the variant is the embodiment, default the pretrained
   checkpoint's own, e.g. `front` for a `laptop_long` checkpoint) with a collection seed the
   pretraining data did not use.
3. Trains every arm with `finetune.py`: each --modes mode and `scratch` (the same model, data,
   data settings, optimizer and steps with no pretrained weight reused), once per --seeds seed.
   Cameras the pretrained model lacks (the `wrist` variant's wrist camera) get new tokenizers.
4. Evaluates each arm closed-loop with `evaluate.py` on the same scenes (--eval_seed), with the
   same execution for every arm (--execution, --exec_horizon, --ensemble_decay, --max_steps);
   and the pretrained checkpoint itself (rows `zero_shot`): on each target it can act in, and
   on --own_tasks, a sample of its own pretraining tasks (target `own`).
5. Writes ``<workdir>/transfer.txt`` (success +- 95% interval per arm and task, per-seed rates,
   each mode's gap to scratch with its 95% interval), ``transfer.png`` (bar chart) and
   ``transfer.jsonl``; the last line printed is the same JSON line.

Every arm's result is saved as ``results/<target>/<mode>/seed<k>.json`` when it finishes, so an
interrupted benchmark resumes where it stopped (delete a file to redo that arm). Arms run in this
process, one at a time, through the entry points' own command-line parsers: the commands logged
are the ones a user would run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO, os.path.join(REPO, "scripts")):  # train.py, finetune.py, evaluate.py
    if _path not in sys.path:
        sys.path.insert(0, _path)

log = logging.getLogger("benchmark_transfer")

from transfer_pretraining import (  # noqa: E402  (scripts/ is on the path above)
    check_targets,
    checkpoint_scope,
    ensure_pretrained,
    own_task_sample,
    planned_scope,
    pretrained_variant,
    zero_shot_dataset,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--pretrained", default="", help="checkpoint dir to reuse (else pretrain)")
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
    parser.add_argument("--demos", type=int, default=50, help="demonstrations per target task")
    parser.add_argument("--val_demos", type=int, default=2, help="validation episodes per task")
    parser.add_argument("--collect_seed", type=int, default=1, help="seed of the target demos")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of every arm")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--finetune_arg", action="append", default=[], help="extra finetune.py flag, every arm"
    )
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
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(os.path.expanduser(args.workdir))
    return args


def default_targets(pretrain_tasks: tuple[str, ...]) -> list[str]:
    """Three MT50 tasks pretraining never saw (if any), and two new embodiments on two
    pretraining tasks (a new robot doing known tasks)."""
    from octo_like.envs.tasks import TASKS

    unseen = [t for t in TASKS if t not in pretrain_tasks][:3]
    known = ",".join(pretrain_tasks[:2])
    return [
        *([f"heldout={','.join(unseen)}"] if unseen else []),
        f"metric7={known}@metric7",
        f"wrist={known}@wrist",
    ]


# ---------------------------------------------------------------------------------- arms
def collect_target_data(args, target) -> str:
    """TFDS data root of `target`'s demonstrations (collected once, then reused)."""
    from octo_like.envs.demos import CollectionConfig, ensure_demonstrations

    config = CollectionConfig(
        tasks=target.tasks,
        episodes_per_task=args.demos,
        val_episodes_per_task=args.val_demos,
        variant=target.variant,
        seed=args.collect_seed,
    )
    return ensure_demonstrations(
        os.path.join(args.workdir, "data", target.name), config, workers=args.workers
    )


def finetune_argv(args, arm, pretrained: str, data_root: str) -> list[str]:
    """The finetune.py command line of `arm`: identical for every mode but the mode itself."""
    from octo_like.envs.variants import dataset_name_of, get_variant

    variant = get_variant(arm.target.variant)
    steps = args.steps
    return [
        "finetune.py",
        f"--config={REPO}/configs/finetune.py:{arm.mode},language",
        f"--workdir={run_dir(args, arm)}",
        f"--config.pretrained_path={pretrained}",
        f"--config.dataset.name={dataset_name_of(variant.name)}",
        f"--config.dataset.location={data_root}",
        f"--config.model.action_dim={variant.action_dim}",
        f"--config.seed={arm.seed}",
        f"--config.num_steps={steps}",
        f"--config.data.batch_size={args.batch_size}",
        f"--config.optimizer.warmup_steps={max(1, min(250, steps // 10))}",
        f"--config.checkpoint.save_every={steps}",
        f"--config.eval_every={steps}",
        f"--config.log_every={max(1, min(100, steps // 10))}",
        "--config.tensorboard=False",
        # One XLA cache for all arms: seeds and full/scratch compile the same step.
        f"--config.compilation_cache={os.path.join(args.workdir, 'compilation_cache')}",
        *args.finetune_arg,
    ]


def set_cameras(
    config, variant_name: str, pretrained_cameras: tuple[str, ...], crop: bool = True
) -> None:
    """Gives `config` (a finetune ConfigDict) a tokenizer and an image size for every camera of
    the variant the pretrained model lacks, and (crop False) no random crop on the primary
    camera, the same for every arm: a fixed camera gains nothing from it."""
    from octo_like.envs.variants import get_variant

    variant = get_variant(variant_name)
    new = not set(variant.cameras) <= set(pretrained_cameras)
    if not new and crop:
        return  # the defaults: the pretrained cameras, primary augmented
    cameras = variant.cameras if new else pretrained_cameras
    size = (variant.image_size, variant.image_size)
    primary_augment = dict() if crop else dict(random_resized_crop_scale=None)
    if new:
        config.model.image_tokenizers = tuple(dict(camera=c) for c in cameras)
    config.data.frame.cameras = {
        c: dict(
            size=None if c in pretrained_cameras else size,
            augment=primary_augment if c == "primary" else None,
        )
        for c in cameras
    }


def run_dir(args, arm) -> str:
    return os.path.join(args.workdir, "runs", arm.key)


def evaluation_tag(args) -> str:
    """Names how rows were evaluated, e.g. ``receding-h2-150steps-20eps-seed0``: results of
    other execution settings live beside each other, never reused for one another."""
    execution = args.execution + (f"-h{args.exec_horizon}" if args.exec_horizon else "")
    if args.execution == "ensemble":
        execution += f"-d{args.ensemble_decay:g}"
    return f"{execution}-{args.max_steps}steps-{args.eval_episodes}eps-seed{args.eval_seed}"


def result_path(args, arm) -> str:
    return os.path.join(args.workdir, "results", evaluation_tag(args), arm.key + ".json")


def train_arm(args, arm, pretrained: str, cameras: tuple[str, ...], data_root: str) -> float:
    """Fine-tunes (or trains from scratch) one arm; returns its training seconds. `cameras`:
    those the pretrained model has (a target's others get new tokenizers). An arm trained
    before with the same command is reused (for another evaluation setting); one trained with
    another command is an error, not silently reused."""
    import finetune

    argv = finetune_argv(args, arm, pretrained, data_root)
    record = {"argv": argv, "crop": not args.no_crop}
    done = os.path.join(run_dir(args, arm), "trained.json")
    if os.path.exists(done):
        with open(done) as f:
            previous = json.load(f)
        if {k: previous.get(k) for k in record} != record:
            raise ValueError(
                f"arm {arm.key} in {run_dir(args, arm)} was trained with another command "
                f"({previous.get('argv')}, crop={previous.get('crop')}); use another --workdir "
                "or delete that run"
            )
        log.info("arm %s: trained before (%s)", arm.key, done)
        return float(previous["seconds"])
    log.info("arm %s: %s", arm.key, " ".join(argv))
    config, workdir, overwrite, stop = finetune.parse_command_line(argv)
    set_cameras(config, arm.target.variant, cameras, crop=not args.no_crop)
    start = time.perf_counter()
    finetune.main(config, workdir, overwrite=overwrite, stop_at_step=stop, echo=log.info)
    seconds = time.perf_counter() - start
    with open(done, "w") as f:
        json.dump({**record, "seconds": round(seconds, 1)}, f, indent=1)
    return seconds


def evaluate_checkpoint(args, checkpoint: str, tasks, variant: str, dataset_name=None):
    """Closed-loop ``{task: (successes, episodes)}`` of a checkpoint and the seconds it took,
    executed as every other row is (--execution, --exec_horizon, --ensemble_decay)."""
    import evaluate

    argv = [
        f"--checkpoint={checkpoint}",
        f"--tasks={','.join(tasks)}",
        f"--variant={variant}",
        f"--episodes={args.eval_episodes}",
        f"--max_steps={args.max_steps}",
        f"--seed={args.eval_seed}",
        f"--workers={args.workers}",
        f"--execution={args.execution}",
        f"--ensemble_decay={args.ensemble_decay}",
        *([f"--exec_horizon={args.exec_horizon}"] if args.exec_horizon else []),
        *([f"--dataset_name={dataset_name}"] if dataset_name else []),
        "--no_progress",
        *([f"--gl={args.gl}"] if args.gl else []),
    ]
    log.info("evaluating: scripts/evaluate.py %s", " ".join(argv))
    report = evaluate.main(argv)
    rows = report.per_task()
    per_task = {t: (int(rows[t]["successes"]), int(rows[t]["episodes"])) for t in tasks}
    return per_task, report.seconds


def evaluate_arm(args, arm) -> tuple[dict[str, tuple[int, int]], float]:
    """Closed-loop ``{task: (successes, episodes)}`` of one arm, and the seconds it took."""
    checkpoint = os.path.join(run_dir(args, arm), "checkpoints")
    return evaluate_checkpoint(args, checkpoint, arm.target.tasks, arm.target.variant)


def load_result(path: str):
    from octo_like.envs.transfer import ArmResult

    with open(path) as f:
        return ArmResult.from_json(json.load(f))


def save_result(path: str, result) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result.to_json(), f, indent=1)
    os.replace(path + ".tmp", path)


def run_zero_shot(args, target, pretrained: str, info):
    """The pretrained checkpoint on `target` before any fine-tuning (saved like an arm), or None
    when it cannot act in the target's embodiment (logged with the reason)."""
    from octo_like.envs.transfer import ZERO_SHOT, Arm, ArmResult

    arm = Arm(target, ZERO_SHOT, 0)
    path = result_path(args, arm)
    if os.path.exists(path):
        return load_result(path)
    dataset_name, why = zero_shot_dataset(info, target.variant)
    if dataset_name is None:
        log.info("zero-shot on %s skipped: %s", target.name, why)
        return None
    per_task, seconds = evaluate_checkpoint(
        args, pretrained, target.tasks, target.variant, dataset_name
    )
    result = ArmResult(arm, per_task, 0.0, seconds)
    save_result(path, result)
    return result


def run_arm(args, arm, pretrained: str, cameras: tuple[str, ...], data_root: str):
    """The arm's saved result, else trains, evaluates and saves it."""
    from octo_like.envs.transfer import ArmResult

    path = result_path(args, arm)
    if os.path.exists(path):
        log.info("arm %s: reusing %s", arm.key, path)
        return load_result(path)
    train_seconds = train_arm(args, arm, pretrained, cameras, data_root)
    per_task, eval_seconds = evaluate_arm(args, arm)
    result = ArmResult(arm, per_task, train_seconds, eval_seconds)
    save_result(path, result)
    return result


# ---------------------------------------------------------------------------------- main
def main(argv=None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    from octo_like.envs import transfer
    from octo_like.training.finetune_config import read_pretrained

    # Held-out tasks without @VARIANT run on the pretraining robot: the checkpoint's own variant.
    reused = read_pretrained(ensure_pretrained(args)) if args.pretrained else None
    if reused is not None:
        scope = checkpoint_scope(reused.checkpoint_dir, reused.dataset_names)
        own = pretrained_variant(reused)
    else:
        scope = planned_scope(args)
        own = scope.variants[0] if scope.variants else "default"
    targets = [
        transfer.Target.parse(t, default_variant=own)
        for t in (args.target or default_targets(scope.tasks or ()))
    ]
    check_targets(targets, scope, args.pretrained or "the pretraining run")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    arms = transfer.plan(targets, modes, seeds)  # validates before any work
    own_tasks = own_task_sample(scope, args.own_tasks)
    os.makedirs(args.workdir, exist_ok=True)

    pretrained = ensure_pretrained(args)
    info = reused or read_pretrained(pretrained)
    if reused is None:  # pretrained here: what it actually saw is now on disk
        check_targets(targets, checkpoint_scope(pretrained, info.dataset_names), pretrained)
    results = []
    if not args.no_zero_shot:
        zero_shot_targets = [*targets]
        if own_tasks:
            zero_shot_targets.append(transfer.Target(transfer.OWN_TASKS, own, own_tasks))
        for target in zero_shot_targets:
            result = run_zero_shot(args, target, pretrained, info)
            results += [result] if result is not None else []
    data_roots = {t.name: collect_target_data(args, t) for t in targets}
    for i, arm in enumerate(arms):
        log.info("arm %d/%d: %s", i + 1, len(arms), arm.key)
        results.append(
            run_arm(args, arm, pretrained, tuple(info.config.cameras), data_roots[arm.target.name])
        )
    return report(args, transfer, results, pretrained, seeds)


def report(args, transfer, results, pretrained: str, seeds: list[int]) -> list[dict]:
    """Writes transfer.txt / .png / .jsonl and prints the table; returns the summary rows."""
    rows = transfer.summarize(results)
    text = transfer.table(rows)
    execution = (
        f"{args.execution}"
        + (f", {args.exec_horizon} actions/chunk" if args.exec_horizon else "")
        + (f", decay {args.ensemble_decay}" if args.execution == "ensemble" else "")
    )
    budget = (
        f"{args.demos} demos/task, {args.steps} steps at batch {args.batch_size}, seeds {seeds}, "
        f"{args.eval_episodes} episodes/task/seed (max {args.max_steps} steps, {execution}), "
        f"pretrained: {pretrained}"
    )
    chart = transfer.bar_chart(
        rows, os.path.join(args.workdir, "transfer.png"), title=f"transfer ({args.demos} demos)"
    )
    line = transfer.json_line(
        rows,
        pretrained=pretrained,
        demos_per_task=args.demos,
        steps=args.steps,
        batch_size=args.batch_size,
        seeds=seeds,
        eval_episodes=args.eval_episodes,
        max_steps=args.max_steps,
        execution=args.execution,
        exec_horizon=args.exec_horizon,
        ensemble_decay=args.ensemble_decay,
        train_seconds=round(sum(r.train_seconds for r in results), 1),
        eval_seconds=round(sum(r.eval_seconds for r in results), 1),
    )
    with open(os.path.join(args.workdir, "transfer.txt"), "w") as f:
        f.write(f"# {budget}\n{text}\n")
    with open(os.path.join(args.workdir, "transfer.jsonl"), "w") as f:
        f.write(line + "\n")
    print(f"# {budget}")
    print(text)
    print(f"chart: {chart}")
    print(line)
    return rows


if __name__ == "__main__":
    main()

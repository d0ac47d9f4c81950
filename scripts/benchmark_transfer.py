"""Does pretraining pay? Fine-tuning vs training from scratch on held-out tasks and new robots.

    python scripts/benchmark_transfer.py --workdir runs/transfer \
        --pretrained runs/laptop/checkpoints \
        --target heldout=drawer-close,button-press,reach-wall \
        --target metric7=reach,drawer-open@metric7 --target wrist=reach,drawer-open@wrist \
        --modes full,head_only --demos 50 --steps 1500 --seeds 0,1,2 --eval_episodes 20

1. Pretrains with `train.py` (configs/pretrain.py:laptop on --pretrain_tasks, with any
   --pretrain_arg=--config.KEY=VALUE) unless --pretrained names a checkpoint to reuse; a finished
   pretraining in the workdir is reused too.
2. Collects --demos scripted-expert demonstrations per task of each --target
   (``NAME=TASK,TASK[@VARIANT]``; the variant is the embodiment, default the pretrained
   checkpoint's own, e.g. `front` for a `laptop_long` checkpoint) with a collection seed the
   pretraining data did not use.
3. Trains every arm with `finetune.py`: each --modes mode and `scratch` (the same model, data,
   data settings, optimizer and steps with no pretrained weight reused), once per --seeds seed.
   Cameras the pretrained model lacks (the `wrist` variant's wrist camera) get new tokenizers.
4. Evaluates each arm closed-loop with `evaluate.py` on the same scenes (--eval_seed).
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


def parse_args(argv=None) -> argparse.Namespace:
    from octo_like.envs.tasks import DEFAULT_TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--pretrained", default="", help="checkpoint dir to reuse (else pretrain)")
    parser.add_argument("--pretrain_tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--pretrain_demos", type=int, default=50, help="per task")
    parser.add_argument("--pretrain_steps", type=int, default=3000)
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
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--eval_seed", type=int, default=0, help="scene seed (same for all arms)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gl", choices=("egl", "osmesa"), default=None)
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(os.path.expanduser(args.workdir))
    return args


def default_targets(pretrain_tasks: tuple[str, ...]) -> list[str]:
    """Held-out MT50 tasks near the default ones, and two new embodiments on two pretraining
    tasks (a new robot doing known tasks)."""
    known = ",".join(pretrain_tasks[:2])
    return [
        "heldout=drawer-close,button-press,reach-wall",
        f"metric7={known}@metric7",
        f"wrist={known}@wrist",
    ]


# ---------------------------------------------------------------------------------- pretraining
def pretrain_argv(args) -> list[str]:
    """The train.py command line of the pretraining run."""
    return [
        "train.py",
        f"--config={REPO}/configs/pretrain.py:laptop",
        f"--workdir={os.path.join(args.workdir, 'pretrain')}",
        f"--config.num_steps={args.pretrain_steps}",
        f"--config.simulation.tasks={args.pretrain_tasks}",
        f"--config.simulation.episodes_per_task={args.pretrain_demos}",
        f"--config.checkpoint.save_every={args.pretrain_steps}",
        *args.pretrain_arg,
    ]


def pretrained_variant(info) -> str:
    """The embodiment variant a checkpoint (`read_pretrained`'s PretrainedInfo) was trained on:
    its first simulated dataset's; `default` when it names none (pretraining here uses
    `laptop`, whose variant that is)."""
    from octo_like.envs.variants import variant_of_dataset

    for name in info.dataset_names:
        variant = variant_of_dataset(name)
        if variant is not None:
            return variant.name
    return "default"


def ensure_pretrained(args) -> str:
    """The checkpoint directory the arms start from: --pretrained, else pretrain (resuming a
    pretraining run of this workdir, which returns at once when it is finished)."""
    if args.pretrained:
        return os.path.abspath(os.path.expanduser(args.pretrained))
    import train

    argv = pretrain_argv(args)
    log.info("pretraining: %s", " ".join(argv))
    config, workdir, overwrite, stop = train.parse_command_line(argv)
    train.main(config, workdir, overwrite=overwrite, stop_at_step=stop)
    return os.path.join(workdir, "checkpoints")


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


def add_new_cameras(config, variant_name: str, pretrained_cameras: tuple[str, ...]) -> None:
    """Gives `config` (a finetune ConfigDict) a tokenizer and an image size for every camera of
    the variant, when the variant has cameras the pretrained model lacks."""
    from octo_like.envs.variants import get_variant

    variant = get_variant(variant_name)
    if set(variant.cameras) <= set(pretrained_cameras):
        return
    size = (variant.image_size, variant.image_size)
    config.model.image_tokenizers = tuple(dict(camera=c) for c in variant.cameras)
    config.data.frame.cameras = {
        c: dict(
            size=None if c in pretrained_cameras else size,
            augment=dict() if c == "primary" else None,
        )
        for c in variant.cameras
    }


def run_dir(args, arm) -> str:
    return os.path.join(args.workdir, "runs", arm.key)


def result_path(args, arm) -> str:
    return os.path.join(args.workdir, "results", arm.key + ".json")


def train_arm(args, arm, pretrained: str, cameras: tuple[str, ...], data_root: str) -> float:
    """Fine-tunes (or trains from scratch) one arm; returns its training seconds. `cameras`:
    those the pretrained model has (a target's others get new tokenizers)."""
    import finetune

    argv = finetune_argv(args, arm, pretrained, data_root)
    log.info("arm %s: %s", arm.key, " ".join(argv))
    config, workdir, overwrite, stop = finetune.parse_command_line(argv)
    add_new_cameras(config, arm.target.variant, cameras)
    start = time.perf_counter()
    finetune.main(config, workdir, overwrite=overwrite, stop_at_step=stop, echo=log.info)
    return time.perf_counter() - start


def evaluate_arm(args, arm) -> tuple[dict[str, tuple[int, int]], float]:
    """Closed-loop ``{task: (successes, episodes)}`` of one arm, and the seconds it took."""
    import evaluate

    argv = [
        f"--checkpoint={os.path.join(run_dir(args, arm), 'checkpoints')}",
        f"--tasks={','.join(arm.target.tasks)}",
        f"--variant={arm.target.variant}",
        f"--episodes={args.eval_episodes}",
        f"--max_steps={args.max_steps}",
        f"--seed={args.eval_seed}",
        f"--workers={args.workers}",
        "--no_progress",
        *([f"--gl={args.gl}"] if args.gl else []),
    ]
    log.info("evaluating %s: scripts/evaluate.py %s", arm.key, " ".join(argv))
    report = evaluate.main(argv)
    rows = report.per_task()
    per_task = {t: (int(rows[t]["successes"]), int(rows[t]["episodes"])) for t in arm.target.tasks}
    return per_task, report.seconds


def run_arm(args, arm, pretrained: str, cameras: tuple[str, ...], data_root: str):
    """The arm's saved result, else trains, evaluates and saves it."""
    from octo_like.envs.transfer import ArmResult

    path = result_path(args, arm)
    if os.path.exists(path):
        with open(path) as f:
            result = ArmResult.from_json(json.load(f))
        log.info("arm %s: reusing %s", arm.key, path)
        return result
    train_seconds = train_arm(args, arm, pretrained, cameras, data_root)
    per_task, eval_seconds = evaluate_arm(args, arm)
    result = ArmResult(arm, per_task, train_seconds, eval_seconds)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result.to_json(), f, indent=1)
    os.replace(path + ".tmp", path)
    return result


# ---------------------------------------------------------------------------------- main
def main(argv=None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    from octo_like.envs import transfer
    from octo_like.envs.tasks import parse_tasks
    from octo_like.training.finetune_config import read_pretrained

    pretrain_tasks = parse_tasks(args.pretrain_tasks)
    # Held-out tasks without @VARIANT run on the pretraining robot: --pretrained's own variant.
    reused = read_pretrained(ensure_pretrained(args)) if args.pretrained else None
    own = pretrained_variant(reused) if reused is not None else "default"
    targets = [
        transfer.Target.parse(t, default_variant=own)
        for t in (args.target or default_targets(pretrain_tasks))
    ]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    arms = transfer.plan(targets, modes, seeds)  # validates before any work
    os.makedirs(args.workdir, exist_ok=True)

    pretrained = ensure_pretrained(args)
    cameras = tuple((reused or read_pretrained(pretrained)).config.cameras)
    data_roots = {t.name: collect_target_data(args, t) for t in targets}
    results = []
    for i, arm in enumerate(arms):
        log.info("arm %d/%d: %s", i + 1, len(arms), arm.key)
        results.append(run_arm(args, arm, pretrained, cameras, data_roots[arm.target.name]))

    rows = transfer.summarize(results)
    text = transfer.table(rows)
    budget = (
        f"{args.demos} demos/task, {args.steps} steps at batch {args.batch_size}, seeds {seeds}, "
        f"{args.eval_episodes} episodes/task/seed (max {args.max_steps} steps), "
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

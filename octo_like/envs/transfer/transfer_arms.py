"""The transfer benchmark's arms: collect a target's data, fine-tune (or train from scratch),
evaluate closed-loop, and save each result as it finishes.

Every arm trains through finetune.py's own command-line parser (handed in as `EntryPoints`) and
every row is evaluated through scripts/evaluate.py's (`evaluate_cli`), so the commands logged
are the ones a user would run. Each result is saved as
``results/<evaluation tag>/<target>/<N>demos/<mode>/seed<k>.json`` (zero-shot rows:
``<target>/zero_shot/seed0.json``) with the command that made it: an interrupted benchmark
resumes where it stopped (delete a file to redo that arm), a result made by another command
(other demonstrations, steps or flags) is refused rather than reused, and results of another
execution setting live beside them, never reused for one another.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import NamedTuple

from octo_like.envs import evaluate_cli
from octo_like.envs.transfer import transfer_offline
from octo_like.envs.transfer.paired import check_provenance
from octo_like.envs.transfer.plan import ZERO_SHOT, Arm, ArmResult, Target
from octo_like.envs.transfer.transfer_scope import EntryPoints, zero_shot_dataset
from octo_like.envs.variants import dataset_name_of, get_variant

log = logging.getLogger("benchmark_transfer")  # one logger name for the benchmark's lines


class ArmSetup(NamedTuple):
    """What every arm of a benchmark shares: the `pretrained` checkpoint directory, the
    `cameras` its model has (a target's others get new tokenizers), the `programs`
    (finetune.py) it trains through, the `provenance` (commit, CPU) of this process and the
    pretrained step's `fingerprint` (`pretrained_fingerprint`)."""

    pretrained: str
    cameras: tuple[str, ...]
    programs: EntryPoints
    provenance: dict[str, str]
    fingerprint: str


def pretrained_fingerprint(info) -> str:
    """The content of the pretrained step the arms start from (`read_pretrained`'s info): a
    SHA-256 over its checksum manifest's entries for the model's items (weights, statistics,
    config, input spec) and tokenizer assets, or ``unverified`` for a step saved without one.
    Recorded in every result, so a result made from other weights at the same path (pretraining
    run again, e.g. on another machine) is refused instead of reused."""
    from octo_like.model.base_checkpoint import BASE_PARAMS
    from octo_like.model.checkpoint_integrity import items_digest
    from octo_like.model.checkpoint_layout import MODEL_ITEMS

    step_dir = os.path.join(info.checkpoint_dir, str(info.step))
    digest = items_digest(step_dir, (*MODEL_ITEMS, BASE_PARAMS))
    if digest is None:
        log.warning("%s has no checksum manifest: its results record it as unverified", step_dir)
    return f"step {info.step} sha256 {digest[:16]}" if digest else f"step {info.step} unverified"


def collect_target_data(args, target: Target) -> str:
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
        os.path.join(args.data_dir, target.name), config, workers=args.workers
    )


def finetune_argv(
    args, arm: Arm, pretrained: str, data_root: str, config_dir: str, split: str = "train"
) -> list[str]:
    """The finetune.py command line of `arm`: identical for every mode but the mode itself (and
    a recipe's flags, last). `split`: the arm's demonstrations (`demo_subsets`), the same for
    every arm of a seed."""
    variant = get_variant(arm.target.variant)
    recipe = args.recipes.get(arm.mode)
    mode, recipe_flags = (recipe.mode, recipe.flags) if recipe else (arm.mode, ())
    steps, every = args.steps, checkpoint_every(args)
    # Every checkpoint kept when several are saved, for the --select rule to choose among.
    keep = [f"--config.checkpoint.keep_last={steps // every + 1}"] if every != steps else []
    return [
        "finetune.py",
        f"--config={config_dir}/finetune.py:{mode},language",
        f"--workdir={run_dir(args, arm)}",
        f"--config.pretrained_path={pretrained}",
        f"--config.dataset.name={dataset_name_of(variant.name)}",
        f"--config.dataset.location={data_root}",
        f"--config.dataset.split={split}",
        f"--config.model.action_dim={variant.action_dim}",
        f"--config.seed={arm.seed}",
        f"--config.num_steps={steps}",
        f"--config.data.batch_size={args.batch_size}",
        f"--config.optimizer.warmup_steps={max(1, min(250, steps // 10))}",
        f"--config.checkpoint.save_every={every}",
        *keep,
        f"--config.eval_every={every}",
        f"--config.log_every={max(1, min(100, steps // 10))}",
        "--config.tensorboard=False",
        # One XLA cache for all arms: seeds and full/scratch compile the same step.
        f"--config.compilation_cache={os.path.join(args.workdir, 'compilation_cache')}",
        *args.finetune_arg,
        *recipe_flags,
    ]


def check_arm_commands(args, arms: list[Arm], programs: EntryPoints) -> None:
    """Parses one finetune.py command line per mode and recipe of `arms` through finetune.py's
    own parser before anything is collected or trained: a typo'd --finetune_arg or --recipe
    flag fails now, not after the first arms have trained. ValueError names the arm."""
    first = {arm.mode: arm for arm in reversed(arms)}
    for mode, arm in first.items():
        argv = finetune_argv(args, arm, "<pretrained>", "<data>", programs.config_dir)
        try:
            programs.finetune.parse_command_line(argv)
        except Exception as e:  # absl, ml_collections and ConfigError: all a bad command line
            raise ValueError(
                f"arm {arm.key} ({mode}): its finetune.py command does not parse: {e}"
            ) from e


def checkpoint_every(args) -> int:
    """Steps between an arm's checkpoints and validation losses (--checkpoint_every; default:
    only the last step)."""
    return args.checkpoint_every or args.steps


def selected_step(args, arm: Arm) -> int:
    """The checkpoint step of `arm` that `--select` evaluates: the last, or (``val_loss``) the
    saved step with the lowest validation loss, the later one on a tie."""
    if args.select == "last":
        return args.steps
    every = checkpoint_every(args)
    saved = {*range(every, args.steps + 1, every), args.steps}
    from octo_like.training.run.metrics import METRICS_FILE, read_jsonl

    path = os.path.join(run_dir(args, arm), METRICS_FILE)
    entries = read_jsonl(path) if os.path.exists(path) else []
    losses = {
        int(e["step"]): float(e["loss"])
        for e in entries
        if e.get("split") == "val" and int(e["step"]) in saved and "loss" in e
    }
    if not losses:
        raise ValueError(
            f"arm {arm.key}: {path} has no validation loss at a saved step ({sorted(saved)}): "
            "--select val_loss needs validation episodes (--val_demos)"
        )
    return min(losses, key=lambda step: (losses[step], -step))


def set_cameras(
    config, variant_name: str, pretrained_cameras: tuple[str, ...], crop: bool = True
) -> None:
    """Gives `config` (a finetune ConfigDict) a tokenizer and an image size for every camera of
    the variant the pretrained model lacks, and (crop False) no random crop on the primary
    camera, the same for every arm: a fixed camera gains nothing from it."""
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


def run_dir(args, arm: Arm) -> str:
    return os.path.join(args.workdir, "runs", arm.key)


def evaluation_suffix(args) -> str:
    """``-INSTRUCTION`` / ``-SELECT`` where not canonical / last, else "": what tells apart
    evaluations of the same trained arms (their results and their reports)."""
    told = "" if args.instruction == "canonical" else f"-{args.instruction}"
    return told + ("" if args.select == "last" else f"-{args.select}")


def evaluation_tag(args) -> str:
    """Names how rows were evaluated, e.g. ``receding-h2-150steps-20eps-seed0`` (with
    ``-empty`` / ``-alternate`` for another instruction): results of other execution settings
    live beside each other, never reused for one another."""
    execution = args.execution + (f"-h{args.exec_horizon}" if args.exec_horizon else "")
    if args.execution == "ensemble":
        execution += f"-d{args.ensemble_decay:g}"
    return (
        f"{execution}-{args.max_steps}steps-{args.eval_episodes}eps-seed{args.eval_seed}"
        f"{evaluation_suffix(args)}"
    )


def result_path(args, arm: Arm) -> str:
    return os.path.join(args.workdir, "results", evaluation_tag(args), arm.key + ".json")


def train_arm(
    args, arm: Arm, setup: ArmSetup, data_root: str, split: str = "train"
) -> tuple[float, dict[str, str]]:
    """Fine-tunes (or trains from scratch) one arm on the demonstrations `split` in `data_root`;
    returns its training seconds and where it trained (commit, CPU; {} if an arm trained before
    did not record it). An arm trained before with the same command is reused (for another
    evaluation setting); one trained with another command is an error, not silently reused."""
    programs = setup.programs
    argv = finetune_argv(args, arm, setup.pretrained, data_root, programs.config_dir, split)
    record = {"argv": argv, "crop": not args.no_crop, "pretrained": setup.fingerprint}
    done = os.path.join(run_dir(args, arm), "trained.json")
    if os.path.exists(done):
        with open(done) as f:
            previous = json.load(f)
        if {k: previous.get(k) for k in record} != record:
            raise ValueError(
                f"arm {arm.key} in {run_dir(args, arm)} was trained with another command "
                f"({previous.get('argv')}, crop={previous.get('crop')}, pretrained "
                f"{previous.get('pretrained')}); use another --workdir or delete that run"
            )
        log.info("arm %s: trained before (%s)", arm.key, done)
        return float(previous["seconds"]), dict(previous.get("provenance", {}))
    log.info("arm %s: %s", arm.key, " ".join(argv))
    config, workdir, overwrite, stop = programs.finetune.parse_command_line(argv)
    set_cameras(config, arm.target.variant, setup.cameras, crop=not args.no_crop)
    start = time.perf_counter()
    programs.finetune.main(config, workdir, overwrite=overwrite, stop_at_step=stop, echo=log.info)
    seconds = time.perf_counter() - start
    with open(done, "w") as f:
        json.dump(
            {**record, "seconds": round(seconds, 1), "provenance": setup.provenance}, f, indent=1
        )
    return seconds, setup.provenance


def evaluate_checkpoint(
    args, checkpoint: str, tasks, variant: str, dataset_name=None, step: int | None = None
):
    """Closed-loop ``{task: (successes, episodes)}`` of a checkpoint (at `step`; None: its last)
    and the seconds it took, executed and told as every other row is (--execution,
    --exec_horizon, --ensemble_decay, --instruction)."""
    argv = [
        f"--checkpoint={checkpoint}",
        *([f"--step={step}"] if step is not None else []),
        f"--tasks={','.join(tasks)}",
        f"--variant={variant}",
        f"--episodes={args.eval_episodes}",
        f"--max_steps={args.max_steps}",
        f"--seed={args.eval_seed}",
        f"--workers={args.workers}",
        f"--execution={args.execution}",
        f"--ensemble_decay={args.ensemble_decay}",
        f"--instruction={args.instruction}",
        *([f"--exec_horizon={args.exec_horizon}"] if args.exec_horizon else []),
        *([f"--dataset_name={dataset_name}"] if dataset_name else []),
        "--no_progress",
        *([f"--gl={args.gl}"] if args.gl else []),
    ]
    log.info("evaluating: scripts/evaluate.py %s", " ".join(argv))
    report = evaluate_cli.main(argv)
    rows = report.per_task()
    per_task = {t: (int(rows[t]["successes"]), int(rows[t]["episodes"])) for t in tasks}
    return per_task, report.seconds


def load_result(path: str) -> ArmResult:
    with open(path) as f:
        return ArmResult.from_json(json.load(f))


def save_result(path: str, result: ArmResult) -> None:
    """Written whole or not at all (a temporary file renamed), so a kill never leaves half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result.to_json(), f, indent=1)
    os.replace(path + ".tmp", path)


def arm_command(args, argv: list[str], fingerprint: str) -> tuple[str, ...]:
    """What makes an arm's result: its finetune.py command line, the benchmark's ``--no_crop``,
    which `set_cameras` applies to the config and the command line does not show, and the
    pretrained step's content (`pretrained_fingerprint`), which its path does not show
    (`train_arm`'s trained.json records the same three)."""
    crop = ["--no_crop"] if args.no_crop else []
    return (*argv, *crop, f"pretrained: {fingerprint}")


def reusable(path: str, arm: Arm, command: tuple[str, ...]) -> ArmResult | None:
    """The result saved at `path` if `command` made it; None if there is none, or if it was
    saved before results kept their command (moved aside to ``*.unrecorded``, to be redone).
    One made by another command is refused: its demonstrations or settings differ."""
    if not os.path.exists(path):
        return None
    saved = load_result(path)
    if saved.command == command:
        return saved
    if not saved.command:
        os.replace(path, path + ".unrecorded")
        log.info("arm %s: %s records no command; kept as .unrecorded, made again", arm.key, path)
        return None
    raise ValueError(
        f"arm {arm.key}: {path} was made by another command ({' '.join(saved.command)}); use "
        "another --workdir or delete that result"
    )


def check_saved_provenance(args, arms: list[Arm], here: dict[str, str]) -> None:
    """Refuses, before any work, saved results of `arms` that this run would reuse but that
    were made at another commit or on another CPU than `here` (unless
    ``--allow_mixed_provenance``): the report would refuse them only after the training."""
    paths = [result_path(args, arm) for arm in arms]
    saved = [load_result(path) for path in paths if os.path.exists(path)]
    records = [r for result in saved if result.command for r in result.provenance_records()]
    if records:
        check_provenance([*records, {**here, "name": "this run"}],
                         allow_mixed=args.allow_mixed_provenance)  # fmt: skip


def run_zero_shot(args, target: Target, info, setup: ArmSetup):
    """The pretrained checkpoint (`setup.pretrained`, `info` its `read_pretrained`) on `target`
    before any fine-tuning (saved like an arm, with `setup`'s provenance and fingerprint), or
    None when it cannot act in the target's embodiment (logged with the reason)."""
    pretrained, provenance = setup.pretrained, setup.provenance
    arm = Arm(target, ZERO_SHOT, 0)
    dataset_name, why = zero_shot_dataset(info, target.variant)
    if dataset_name is None:
        log.info("zero-shot on %s skipped: %s", target.name, why)
        return None
    command = (ZERO_SHOT, pretrained, dataset_name, f"pretrained: {setup.fingerprint}")
    path = result_path(args, arm)
    saved = reusable(path, arm, command)
    if saved is not None:
        return saved
    per_task, seconds = evaluate_checkpoint(
        args, pretrained, target.tasks, target.variant, dataset_name
    )
    result = ArmResult(arm, per_task, 0.0, seconds, {"evaluate": provenance}, command)
    save_result(path, result)
    return result


def run_arm(args, arm: Arm, setup: ArmSetup, data_root: str, split: str = "train") -> ArmResult:
    """The arm's saved result, else trains (on the demonstrations `split`), evaluates and saves
    it, with where each stage ran and the evaluated step's offline numbers (`transfer_offline`)."""
    path = result_path(args, arm)
    argv = finetune_argv(args, arm, setup.pretrained, data_root, setup.programs.config_dir, split)
    command = arm_command(args, argv, setup.fingerprint)
    saved = reusable(path, arm, command)
    if saved is not None:
        log.info("arm %s: reusing %s", arm.key, path)
        return saved
    train_seconds, trained_at = train_arm(args, arm, setup, data_root, split)
    checkpoint = os.path.join(run_dir(args, arm), "checkpoints")
    step = selected_step(args, arm)
    per_task, eval_seconds = evaluate_checkpoint(
        args, checkpoint, arm.target.tasks, arm.target.variant, step=step
    )
    stages = {"train": trained_at, "evaluate": setup.provenance}
    offline = transfer_offline.read_offline(run_dir(args, arm), step)
    result = ArmResult(arm, per_task, train_seconds, eval_seconds, stages, command, step, offline)
    save_result(path, result)
    return result

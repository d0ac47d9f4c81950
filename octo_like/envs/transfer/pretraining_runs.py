"""Several pretraining runs in one transfer benchmark: which runs, where each one's benchmark
lives, and whether they can share their scratch arms.

A conclusion about pretraining that rests on one pretraining run is a conclusion about that
checkpoint (issue 70: three runs of one command transferred very differently). The benchmark
takes several runs, ``--pretrained A,B,C`` (checkpoints) or ``--pretrain_seeds 0,1,2`` (the
pretraining command once per seed, plus ``--config.seed=K``). One run is today's benchmark in
the workdir itself; with several, each runs today's benchmark in
``<workdir>/pretraining/<run>/`` (`run_args`: ``seed<K>`` or ``run<i>``), all collecting into
one --data_dir, so every run's seed reads the same demonstrations.

A scratch arm builds the pretrained model's architecture (config, input spec, tokenizer) from
its checkpoint and takes no weight, except a frozen T5 encoder's (`finetune.reusable_from_scratch`)
and the dataset statistics when --config.statistics_from reads them. `scratch_sharing` shares
the first run's scratch arms with every run when no checkpoint has a T5 encoder and what a
scratch arm reads is the same in all; otherwise each run trains its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from octo_like import storage

PRETRAINING_DIR = "pretraining"  # <workdir>/pretraining/<run>/: one run's benchmark


@dataclasses.dataclass(frozen=True)
class PretrainingRun:
    """One pretraining run: `name` (its sub-workdir, ``seed<K>`` or ``run<i>``; "" for the one
    run of today's benchmark), the `checkpoint` it reuses ("": pretrained by the benchmark) and
    the train.py `seed` it pretrains with (None: the preset's)."""

    name: str
    checkpoint: str = ""
    seed: int | None = None


def parse_pretraining_runs(
    pretrained: str, pretrain_seeds: str | None, pretrain_arg: Sequence[str] = ()
) -> tuple[PretrainingRun, ...]:
    """The runs of ``--pretrained`` (checkpoint directories separated by commas) or
    ``--pretrain_seeds`` (whole numbers separated by commas); neither: one run, pretrained with
    the preset's seed. ValueError for both at once, a bad or repeated seed or checkpoint, or a
    --pretrain_arg that sets the seed --pretrain_seeds sets."""
    checkpoints = [path.strip() for path in (pretrained or "").split(",") if path.strip()]
    if checkpoints and pretrain_seeds is not None:
        raise ValueError(
            "--pretrained and --pretrain_seeds both name the pretraining runs: give the "
            "checkpoints to reuse (--pretrained A,B,C) or the seeds to pretrain with "
            "(--pretrain_seeds 0,1,2), not both"
        )
    if pretrain_seeds is not None:
        try:
            seeds = [int(s) for s in pretrain_seeds.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"--pretrain_seeds takes distinct whole numbers >= 0 separated by commas, got "
                f"{pretrain_seeds!r}"
            )
        setting = [a for a in pretrain_arg if a.split("=")[0] == "--config.seed"]
        if setting:
            raise ValueError(
                f"--pretrain_seeds sets train.py's --config.seed; drop --pretrain_arg={setting[0]}"
            )
        return tuple(PretrainingRun(f"seed{seed}", seed=seed) for seed in seeds)
    absolute = [os.path.normpath(os.path.abspath(os.path.expanduser(p))) for p in checkpoints]
    if len(set(absolute)) != len(absolute):
        raise ValueError(f"--pretrained names a checkpoint twice: {pretrained!r}")
    if len(checkpoints) <= 1:  # today's benchmark: one checkpoint, or pretrained here
        return (PretrainingRun("", "".join(checkpoints)),)
    return tuple(PretrainingRun(f"run{i}", path) for i, path in enumerate(checkpoints))


def run_args(args: argparse.Namespace, run: PretrainingRun, several: bool) -> argparse.Namespace:
    """`args` of the benchmark of `run`: its checkpoint as --pretrained, its seed added to the
    pretraining command and (`several`) its own workdir ``<workdir>/pretraining/<name>``; the
    rest, --data_dir included, as given (a copy: `args` is left as it is)."""
    seed = [] if run.seed is None else [f"--config.seed={run.seed}"]
    workdir = os.path.join(args.workdir, PRETRAINING_DIR, run.name) if several else args.workdir
    return argparse.Namespace(
        **{
            **vars(args),
            "workdir": workdir,
            "pretrained": run.checkpoint,
            "pretrain_arg": [*args.pretrain_arg, *seed],
            "pretraining_runs": (run,),
        }
    )


def reads_pretrained_statistics(finetune_args: Sequence[str]) -> bool:
    """Whether a --finetune_arg (given to every arm, scratch too) normalizes with the
    checkpoint's statistics rather than the data's."""
    values = [
        a.split("=", 1)[1] for a in finetune_args if a.startswith("--config.statistics_from=")
    ]
    return bool(values) and values[-1].strip("'\"") != "data"


def scratch_inputs(info, finetune_args: Sequence[str] = ()) -> dict[str, Any]:
    """What a scratch arm reads from a checkpoint (`read_pretrained`'s info) besides a T5's
    weights: the model config without its tokenizer's path, the input spec, the tokenizer
    files' SHA-256, and the dataset statistics when `finetune_args` read them."""
    config = dataclasses.asdict(info.config)
    language_dir = config["language"].pop("checkpoint_dir") or ""
    tokenizer = {}
    for name in ("config.json", "spiece.model"):  # checkpoint_layout.LANGUAGE_FILES
        path = storage.join(language_dir, name) if language_dir else ""
        if path and storage.exists(path):
            tokenizer[name] = hashlib.sha256(storage.read_bytes(path)).hexdigest()
    inputs = {"config": config, "input_spec": info.input_spec, "tokenizer": tokenizer}
    if reads_pretrained_statistics(finetune_args):
        inputs["statistics"] = json.dumps(dict(info.statistics), sort_keys=True, default=str)
    return inputs


class ScratchSharing(NamedTuple):
    """Whether the first run's scratch arms pair with every run's fine-tuned arms (`shared`),
    and the report header's sentence saying so and why."""

    shared: bool
    text: str


def scratch_sharing(
    runs: Sequence[PretrainingRun], infos: Sequence[Any], finetune_args: Sequence[str] = ()
) -> ScratchSharing:
    """Shared when no checkpoint of `runs` (`infos`: their `read_pretrained`) has a T5 language
    encoder and every one gives a scratch arm the same `scratch_inputs`; else per run."""
    t5 = [run.name for run, info in zip(runs, infos, strict=True)
          if info.config.language.encoder == "t5"]  # fmt: skip
    if t5:
        return ScratchSharing(
            False,
            f"scratch arms trained under every pretraining run: {', '.join(t5)} hold a T5 "
            "language encoder (frozen by default), whose weights a scratch arm takes from its "
            "checkpoint",
        )
    first = scratch_inputs(infos[0], finetune_args)
    differ = [
        run.name
        for run, info in zip(runs[1:], infos[1:], strict=True)
        if scratch_inputs(info, finetune_args) != first
    ]
    read = "model config, input spec, tokenizer" + (
        ", statistics" if reads_pretrained_statistics(finetune_args) else ""
    )
    if differ:
        return ScratchSharing(
            False,
            f"scratch arms trained under every pretraining run: {', '.join(differ)} differ from "
            f"{runs[0].name} in what a scratch arm reads from its checkpoint ({read})",
        )
    return ScratchSharing(
        True,
        f"scratch arms trained once, under {runs[0].name}, and paired with every run's "
        f"fine-tuned arms: no checkpoint has a T5 encoder, the only weights a scratch arm "
        f"takes, and all give it the same {read}",
    )

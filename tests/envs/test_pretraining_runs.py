"""Several pretraining runs in the transfer benchmark: the flags, each run's arguments, when the
scratch arms are shared (`pretraining_runs`), and the whole benchmark over runs
(`transfer_benchmark.run`) with training and closed-loop evaluation replaced by recorded
outcomes: everything else (arm commands through finetune.py's parser, demonstration subsets,
saved results and their reuse, per-run and pooled reports) runs as it does for real."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import types

import numpy as np
import pytest

import finetune
import train
from octo_like.envs.transfer import demo_subsets, transfer_arms, transfer_benchmark, transfer_scope
from octo_like.envs.transfer.pretraining_runs import (
    PretrainingRun,
    run_args,
    scratch_inputs,
    scratch_sharing,
)
from octo_like.envs.transfer.pretraining_variance import pooled_gap
from octo_like.envs.transfer.transfer_benchmark import parse_args, run
from octo_like.model.config import LanguageConfig
from octo_like.training.finetuning import finetune_config
from tests.training.test_finetune import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = str(REPO / "configs")


def test_several_checkpoints_or_seeds_name_the_runs_and_one_run_is_todays_benchmark(tmp_path):
    several = parse_args(["--workdir", str(tmp_path), "--pretrained", "/a/ckpt, /b/ckpt"])
    assert several.pretraining_runs == (
        PretrainingRun("run0", "/a/ckpt"), PretrainingRun("run1", "/b/ckpt")
    )  # fmt: skip
    assert several.workdir == str(tmp_path) and several.data_dir == str(tmp_path / "data")
    second = run_args(several, several.pretraining_runs[1], several=True)
    assert second.workdir == str(tmp_path / "pretraining" / "run1")
    assert second.pretrained == "/b/ckpt" and second.pretraining_runs == (
        several.pretraining_runs[1],
    )
    assert second.data_dir == several.data_dir  # one collection for every run
    assert several.workdir == str(tmp_path)  # the benchmark's own args are left as they are

    seeds = parse_args(["--workdir", str(tmp_path), "--pretrain_seeds", "0,1,2",
                        "--pretrain_config", "laptop_broad"])  # fmt: skip
    assert [r.name for r in seeds.pretraining_runs] == ["seed0", "seed1", "seed2"]
    seed1 = run_args(seeds, seeds.pretraining_runs[1], several=True)
    config, run_dir, _, _ = train.parse_command_line(
        transfer_scope.pretrain_argv(seed1, CONFIGS)
    )  # fmt: skip
    assert config.seed == 1 and config.mix == "metaworld_broad"
    assert run_dir == str(tmp_path / "pretraining" / "seed1" / "pretrain")

    # One run: today's benchmark in the workdir itself, as if the new flags did not exist.
    one = parse_args(["--workdir", str(tmp_path), "--pretrained", "/a/ckpt"])
    assert (one.pretrained, one.workdir, one.pretrain_arg) == ("/a/ckpt", str(tmp_path), [])
    assert one.pretraining_runs == (PretrainingRun("", "/a/ckpt"),)
    plain = parse_args(["--workdir", str(tmp_path)])
    assert (plain.pretrained, plain.pretrain_arg) == ("", [])
    assert plain.pretraining_runs == (PretrainingRun(""),)
    one_seed = parse_args(["--workdir", str(tmp_path), "--pretrain_seeds", "4"])
    config, run_dir, _, _ = train.parse_command_line(
        transfer_scope.pretrain_argv(one_seed, CONFIGS)
    )  # fmt: skip
    assert config.seed == 4 and run_dir == str(tmp_path / "pretrain")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pretrained", "/a,/b", "--pretrain_seeds", "0,1"], "not both"),
        (["--pretrain_seeds", "0,x"], "--pretrain_seeds takes distinct whole numbers"),
        (["--pretrain_seeds", "1,1"], "--pretrain_seeds takes distinct whole numbers"),
        (["--pretrain_seeds", "0,1", "--pretrain_arg=--config.seed=3"], "drop --pretrain_arg"),
        (["--pretrained", "/a,/b/../a"], "names a checkpoint twice"),
        (["--pretrained", "/a,/b", "--seeds", "0"], "at least 2 --seeds"),
    ],
)
def test_contradictory_pretraining_flags_are_refused_with_the_reason(
    tmp_path, capsys, flags, message
):
    with pytest.raises(SystemExit):
        parse_args(["--workdir", str(tmp_path), *flags])
    assert message in capsys.readouterr().err


def info_of(path: str, **config) -> finetune_config.PretrainedInfo:
    spec = {"observation": {"image_primary": [2, 32, 32, 3]}}
    return finetune_config.PretrainedInfo(
        path, 6, tiny_config(**config), spec, ("metaworld_default",), {"metaworld_default": {}}
    )


def test_scratch_is_shared_only_when_it_reads_nothing_that_differs_between_checkpoints(tmp_path):
    runs = [PretrainingRun("run0", "/a"), PretrainingRun("run1", "/b")]
    plain = [info_of("/a"), info_of("/b")]
    shared = scratch_sharing(runs, plain)
    assert shared.shared and shared.text.startswith("scratch arms trained once, under run0")
    t5 = LanguageConfig(encoder="t5", checkpoint_dir="/t5")
    frozen = scratch_sharing(runs, [info_of("/a", language=t5), info_of("/b", language=t5)])
    assert not frozen.shared and "run0, run1 hold a T5 language encoder" in frozen.text
    wider = scratch_sharing(runs, [plain[0], info_of("/b", action_dim=4)])
    assert not wider.shared and "run1 differ from run0" in wider.text

    # A small encoder's vocabulary: the tokenizer files' bytes, not their path, decide.
    vocabularies = []
    for name, words in (("a", b"vocabulary"), ("b", b"vocabulary"), ("c", b"other words")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spiece.model").write_bytes(words)
        small = LanguageConfig(encoder="small", checkpoint_dir=str(tmp_path / name))
        vocabularies.append(info_of(f"/{name}", language=small))
    assert scratch_sharing(runs, vocabularies[:2]).shared
    assert not scratch_sharing(runs, vocabularies[::2]).shared

    # Statistics matter only where a --finetune_arg makes every arm, scratch too, read them.
    other = dataclasses.replace(plain[1], statistics={"metaworld_default": {"mean": 1}})
    assert scratch_sharing(runs, [plain[0], other]).shared
    reading = ["--config.statistics_from=pretrained"]
    assert "statistics" in scratch_inputs(other, reading)
    assert not scratch_sharing(runs, [plain[0], other], reading).shared


class Interrupted(Exception):
    """The benchmark stopped part way (a kill, a lost machine)."""


class Runs:
    """The benchmark over pretraining runs with training and evaluation recorded instead of
    run: `trained` lists (run directory, arm key) of each arm trained; an arm's successes (of
    4 episodes) are `full[run][seed]` or `scratch[seed]`."""

    full = {"run0": (3, 4), "run1": (1, 2), "run2": (2, 2), "seed0": (3, 4), "seed1": (1, 2)}
    scratch = (1, 0)

    def __init__(self, monkeypatch, tmp_path, infos: dict[str, finetune_config.PretrainedInfo]):
        self.trained: list[tuple[str, str]] = []
        self.collected: list[str] = []
        self.pretrained: list[tuple[int, str]] = []
        self.fail_after: int | None = None
        monkeypatch.setattr(finetune_config, "read_pretrained", lambda path: infos[path])
        monkeypatch.setattr(
            transfer_benchmark, "pretrained_fingerprint",
            lambda info: f"step 6 sha256 {pathlib.Path(info.checkpoint_dir).parent.name}",
        )  # fmt: skip
        monkeypatch.setattr(transfer_benchmark, "collect_target_data", self.collect)
        monkeypatch.setattr(demo_subsets, "episode_tasks", lambda location, name: ["reach"] * 4)
        monkeypatch.setattr(transfer_arms, "train_arm", self.train)
        monkeypatch.setattr(transfer_arms, "evaluate_checkpoint", self.evaluate)
        self.programs = transfer_scope.EntryPoints(
            CONFIGS, types.SimpleNamespace(parse_command_line=train.parse_command_line,
                                           main=self.pretrain), finetune
        )  # fmt: skip
        self.tmp_path = tmp_path

    def collect(self, args, target):
        self.collected.append(args.data_dir)
        return f"{args.data_dir}/{target.name}"

    def pretrain(self, config, workdir, overwrite=False, stop_at_step=None):
        self.pretrained.append((config.seed, workdir))

    def train(self, args, arm, setup, data_root, split="train"):
        if self.fail_after is not None and len(self.trained) == self.fail_after:
            raise Interrupted(f"after {self.fail_after} arms")
        self.trained.append((pathlib.Path(args.workdir).name, arm.key))
        return 1.0, setup.provenance

    def evaluate(self, args, checkpoint, tasks, variant, dataset_name=None, step=None):
        run, mode, seed = re.search(
            r"pretraining/(\w+)/runs/.*/(\w+)/seed(\d)/", checkpoint
        ).groups()
        successes = self.scratch[int(seed)] if mode == "scratch" else self.full[run][int(seed)]
        return {"reach": (successes, 4)}, 0.5

    def argv(self, *flags: str) -> list[str]:
        return [
            "--workdir", str(self.tmp_path / "bench"), "--target", "wrist=reach@wrist",
            "--modes", "full", "--demos", "2", "--steps", "3", "--batch_size", "8",
            "--seeds", "0,1", "--eval_episodes", "4", "--max_steps", "4", "--no_zero_shot",
            *flags,
        ]  # fmt: skip


def test_runs_share_the_data_and_without_a_t5_the_first_runs_scratch_arms_and_resume(
    tmp_path, monkeypatch, capsys
):
    checkpoints = [str(tmp_path / f"ckpt{i}") for i in range(3)]
    runs = Runs(monkeypatch, tmp_path, {path: info_of(path) for path in checkpoints})
    argv = runs.argv("--pretrained", ",".join(checkpoints))
    runs.fail_after = 4  # interrupted after run0's four arms and before run1's first
    with pytest.raises(Interrupted):
        run(parse_args(argv), runs.programs)
    runs.fail_after = None
    rows = run(parse_args(argv), runs.programs)  # resumes: nothing trained twice
    arms = [f"wrist/2demos/{mode}/seed{s}" for s in (0, 1) for mode in ("full", "scratch")]
    assert runs.trained == [
        *(("run0", key) for key in arms),  # scratch only under the first run
        ("run1", arms[0]), ("run1", arms[2]), ("run2", arms[0]), ("run2", arms[2]),
    ]  # fmt: skip
    bench = tmp_path / "bench"
    assert set(runs.collected) == {str(bench / "data")}  # one collection for every run
    splits = [
        (bench / "pretraining" / f"run{i}" / "demo_subsets" / "wrist.json").read_text()
        for i in range(3)
    ]
    assert splits[0] == splits[1] == splits[2]  # a seed reads the same demonstrations
    for i in range(3):  # each run: today's benchmark, results and report of its own
        report = (bench / "pretraining" / f"run{i}" / "transfer.txt").read_text()
        assert report.startswith("# 2 demos/task") and checkpoints[i] in report.splitlines()[0]
        assert ("scratch arms: run0's (shared)" in report) == (i > 0)
        assert (bench / "pretraining" / f"run{i}" / "results").is_dir()
    assert not (bench / "pretraining" / "run1" / "runs" / "wrist" / "2demos" / "scratch").exists()

    printed = capsys.readouterr().out.strip().splitlines()
    line = json.loads(printed[-1])
    assert line == json.loads((bench / "transfer_pretraining.jsonl").read_text())
    assert line["rows"] == json.loads(json.dumps(rows)) and len(rows) == 1
    assert line["scratch"].startswith("scratch arms trained once, under run0")
    header = (bench / "transfer_pretraining.txt").read_text().splitlines()
    assert header[1].startswith(f"# pretraining run run0: {checkpoints[0]} (step 6 sha256 ")
    assert header[4] == f"# scratch: {line['scratch']}"
    (row,) = rows
    assert [r["seed_rates"] for r in row["runs"]] == [[0.75, 1.0], [0.25, 0.5], [0.5, 0.5]]
    assert all(r["scratch_rate"] == 0.125 for r in row["runs"])
    # differences 0.5, 1.0 | 0.0, 0.5 | 0.25, 0.5: mean over all six
    differences = np.array([[0.5, 1.0], [0.0, 0.5], [0.25, 0.5]])
    assert row["gap_to_scratch"] == pooled_gap(differences).to_json()
    assert row["gap_to_scratch"]["mean"] == round(2.75 / 6, 4)

    runs.trained.clear()
    assert run(parse_args(argv), runs.programs) == rows and runs.trained == []  # all reused


def test_with_a_frozen_t5_every_pretraining_seed_trains_its_own_scratch_arms(tmp_path, monkeypatch):
    t5 = LanguageConfig(encoder="t5", checkpoint_dir="/t5")
    bench = tmp_path / "bench"
    paths = [str(bench / "pretraining" / f"seed{k}" / "pretrain" / "checkpoints") for k in (0, 1)]
    runs = Runs(monkeypatch, tmp_path, {path: info_of(path, language=t5) for path in paths})
    run(parse_args(runs.argv("--pretrain_seeds", "0,1")), runs.programs)
    assert runs.pretrained == [
        (k, str(bench / "pretraining" / f"seed{k}" / "pretrain")) for k in (0, 1)
    ]  # each seed pretrained once, in its own directory, before any arm
    modes = [(workdir, key.split("/")[2]) for workdir, key in runs.trained]
    assert modes.count(("seed0", "scratch")) == modes.count(("seed1", "scratch")) == 2
    header = (bench / "transfer_pretraining.txt").read_text()
    assert "# scratch: scratch arms trained under every pretraining run: seed0, seed1 " in header
    assert (bench / "pretraining" / "seed1" / "transfer.txt").exists()


def test_the_dry_run_shows_each_pretraining_run(tmp_path, capsys):
    from tests.envs.transfer_scripts import load_script

    scopes = load_script("transfer_pretraining").main(
        ["--workdir", str(tmp_path), "--pretrain_seeds", "0,1", "--pretrain_config",
         "laptop_broad", "--held_out", "family:door", "--target", "ok=door-lock"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert len(scopes) == 2 and scopes[0] == scopes[1] and len(scopes[0].tasks) == 46
    for k in (0, 1):
        assert f"pretraining run seed{k}:" in out and f"--config.seed={k}" in out
        assert f"--workdir={tmp_path / 'pretraining' / f'seed{k}' / 'pretrain'}" in out
    assert out.count("target ok (door-lock @ ") == 2 and not (tmp_path / "pretraining").exists()

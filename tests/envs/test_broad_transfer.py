"""The broad pretraining recipe (`configs/pretrain.py:laptop_broad`) and the transfer benchmark's
flags end to end at toy scale: numerics and plumbing, not success rates. Pretrains on two
embodiments with a task family held out, then fine-tunes and evaluates through the benchmark
(`octo_like.envs.transfer.transfer_benchmark`, with scripts/benchmark_transfer.py's entry
points) with the execution flags every row shares."""

from __future__ import annotations

import json

import pytest

import train
from configs import pretrain
from octo_like.envs import evaluate_cli
from octo_like.envs.transfer import transfer_arms, transfer_scope
from octo_like.envs.transfer.transfer_benchmark import parse_args, run
from octo_like.training.finetuning.finetune_config import read_pretrained
from tests import xla_cache
from tests.envs.tiny_runs import shrink_to_seconds
from tests.envs.transfer_scripts import entry_points, load_script


@pytest.fixture(scope="module")
def broad_checkpoint(tmp_path_factory):
    """laptop_broad shrunk to seconds: reach and drawer-open minus the drawer family, 2 steps."""
    tmp = tmp_path_factory.mktemp("broad_run")
    config = pretrain.get_config("laptop_broad")
    shrink_to_seconds(config, tmp, tasks="reach,drawer-open")
    config.data.shuffle_buffer = 64
    config.simulation.held_out = "family:drawer"
    result = train.main(config, str(tmp / "run"))
    assert all(abs(v) < float("inf") for v in result.last_metrics.values())
    return str(tmp / "run" / "checkpoints")


@pytest.mark.slow
def test_the_broad_recipe_pretrains_on_two_embodiments_without_the_held_out_family(
    broad_checkpoint,
):
    info = read_pretrained(broad_checkpoint)
    assert set(info.dataset_names) == {"metaworld_front", "metaworld_default"}
    scope = transfer_scope.checkpoint_scope(broad_checkpoint, info.dataset_names)
    assert scope.tasks == ("reach",) and set(scope.variants) == {"front", "default"}


@pytest.mark.slow
def test_the_benchmark_runs_every_row_with_the_same_execution(
    broad_checkpoint, tmp_path, monkeypatch
):
    programs = entry_points()
    calls = []
    real_main = evaluate_cli.main
    monkeypatch.setattr(evaluate_cli, "main", lambda argv: calls.append(argv) or real_main(argv))
    workdir = tmp_path / "transfer"
    # The arms reuse what pretraining compiled (the same model's initializers) from the
    # session's cache, where every in-process run compiles (tests/conftest.py).
    pretraining_cache = xla_cache.directory()

    def command(target="test=drawer-close", exec_horizon=2, workdir=workdir):
        return [
            "--workdir", str(workdir), "--pretrained", broad_checkpoint, "--target", target,
            "--modes", "full", "--demos", "1,2", "--val_demos", "1", "--steps", "2",
            "--batch_size", "8", "--seeds", "0", "--eval_episodes", "1", "--max_steps", "4",
            "--exec_horizon", str(exec_horizon), "--no_crop",
            f"--finetune_arg=--config.data.statistics_cache_dir={tmp_path / 'stats'}",
            "--finetune_arg=--config.data.shuffle_buffer=64",
            f"--finetune_arg=--config.compilation_cache={pretraining_cache}",
        ]  # fmt: skip

    rows = run(parse_args(command()), programs)
    assert [(r["target"], r["variant"], r["demos"], r["mode"]) for r in rows] == [
        ("test", "front", 0, "zero_shot"),  # the pretrained checkpoint on the held-out task
        ("test", "front", 1, "full"),  # the curve: 1 and 2 demonstrations, both arms
        ("test", "front", 1, "scratch"),
        ("test", "front", 2, "full"),
        ("test", "front", 2, "scratch"),
        ("own", "front", 0, "zero_shot"),  # the checkpoint on its own pretraining tasks
    ]
    assert all(r["episodes"] == 1 for r in rows)
    assert [("gap_to_scratch" in r) for r in rows] == [True, True, False, True, False, False]
    assert len(calls) == 6 and all("--exec_horizon=2" in c and "--max_steps=4" in c for c in calls)
    assert all("--execution=receding" in c for c in calls)
    zero_shot = [c for c in calls if any(a.startswith("--dataset_name=") for a in c)]
    assert len(zero_shot) == 2 and all("--dataset_name=metaworld_front" in c for c in zero_shot)
    line = json.loads((workdir / "transfer.jsonl").read_text())
    assert line["exec_horizon"] == 2 and line["execution"] == "receding"
    assert "receding, 2 actions/chunk" in (workdir / "transfer.txt").read_text()

    # Fine-tuning and scratch: the same data, steps, optimizer and (no-crop) cameras; the one
    # demonstration is one of the two, read through finetune.py's split.
    configs = {
        (demos, mode): json.loads(
            (workdir / "runs" / "test" / f"{demos}demos" / mode / "seed0" / "config.json")
            .read_text()
        )
        for demos in (1, 2) for mode in ("full", "scratch")
    }  # fmt: skip
    for demos in (1, 2):
        for key in ("data", "optimizer", "num_steps", "dataset", "seed"):
            assert configs[demos, "full"][key] == configs[demos, "scratch"][key], (demos, key)
    assert configs[2, "full"]["dataset"]["split"] == "train"  # both collected episodes
    assert configs[1, "full"]["dataset"]["split"] in ("train[0:1]", "train[1:2]")
    subsets = json.loads((workdir / "demo_subsets" / "test.json").read_text())
    assert subsets["splits"] == {"seed0/1demos": configs[1, "full"]["dataset"]["split"],
                                 "seed0/2demos": "train"}  # fmt: skip
    primary = configs[1, "full"]["data"]["frame"]["cameras"]["primary"]
    assert primary["augment"]["random_resized_crop_scale"] is None
    assert "every arm at commit " in (workdir / "transfer.txt").read_text().splitlines()[1]

    # Another execution setting re-evaluates the trained arms, beside the first results.
    monkeypatch.setattr(programs.finetune, "main", lambda *a, **k: pytest.fail("trained again"))
    calls.clear()
    again = run(parse_args([*command(exec_horizon=1), "--no_zero_shot"]), programs)
    assert len(again) == 4 and len(calls) == 4 and all("--exec_horizon=1" in c for c in calls)
    tags = sorted(p.name for p in (workdir / "results").iterdir())
    assert tags == ["receding-h1-4steps-1eps-seed0", "receding-h2-4steps-1eps-seed0"]

    # A target whose demonstrations were in pretraining is refused before any work.
    monkeypatch.setattr(transfer_arms, "train_arm", lambda *a: pytest.fail("trained"))
    with pytest.raises(ValueError, match="target 'leak': reach on 'front' were in pretraining"):
        run(parse_args(command("leak=reach", workdir=tmp_path / "leak")), programs)
    assert not (tmp_path / "leak" / "runs").exists()


def test_pretraining_arguments_pass_through_to_train_py(tmp_path):
    args = parse_args(
        ["--workdir", str(tmp_path), "--pretrain_config", "laptop_broad", "--pretrain_steps",
         "7", "--held_out", "family:door,family:coffee",
         "--pretrain_arg=--config.simulation.episodes_per_task=3"]
    )  # fmt: skip
    programs = entry_points()
    config, run_dir, _, _ = train.parse_command_line(
        transfer_scope.pretrain_argv(args, programs.config_dir)
    )
    assert config.num_steps == 7 and config.simulation.episodes_per_task == 3
    assert config.simulation.held_out == "family:door,family:coffee"
    assert config.mix == "metaworld_broad" and run_dir == str(tmp_path / "pretrain")
    scope = transfer_scope.planned_scope(args, programs)
    assert len(scope.tasks) == 50 - 7 and "door-open" not in scope.tasks
    assert scope.variants == ("front", "default")


def test_the_dry_run_shows_what_pretraining_sees_and_which_targets_leak(tmp_path, capsys):
    scope = load_script("transfer_pretraining").main(
        ["--workdir", str(tmp_path), "--pretrain_config", "laptop_broad",
         "--held_out", "family:door", "--target", "ok=door-lock", "--target", "bad=reach,door-open"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert len(scope.tasks) == 46 and not (tmp_path / "pretrain").exists()  # nothing ran
    assert "--config.simulation.held_out=family:door" in out
    assert "never in pretraining (4): door-close, door-lock, door-open, door-unlock" in out
    assert "target ok (door-lock @ front): ok" in out
    assert "target bad: refused: target 'bad': reach on 'front' were in pretraining" in out


def test_own_task_rows_are_a_spread_sample_of_pretraining_tasks():
    from octo_like.envs.tasks import pretraining_tasks

    tasks = pretraining_tasks("all", "family:door,family:coffee,family:plate")
    scope = transfer_scope.PretrainingScope(tasks, ("front", "default"))
    sample = transfer_scope.own_task_sample(scope, None)
    assert len(sample) == 5 and sample[0] == tasks[0] and set(sample) <= set(tasks)
    assert transfer_scope.own_task_sample(scope, "reach,push") == ("reach", "push")
    with pytest.raises(ValueError, match="--own_tasks door-open: not among the pretraining"):
        transfer_scope.own_task_sample(scope, "reach,door-open")
    unknown = transfer_scope.PretrainingScope(None, ("front",))
    assert transfer_scope.own_task_sample(unknown, None) == ()

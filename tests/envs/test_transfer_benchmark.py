"""The transfer benchmark's pieces that need no simulator or training run: the report, the arms'
command lines and cameras, result reuse, the leak check's warning, and the scripts as thin
entry points into `octo_like.envs` (the runs end to end are in test_broad_transfer.py and
test_simulation.py)."""

from __future__ import annotations

import ast
import json
import logging
import pathlib
import re
import types

import pytest

from octo_like.envs.transfer import transfer_arms
from octo_like.envs.transfer.plan import Arm, ArmResult, Target
from octo_like.envs.transfer.transfer_benchmark import default_targets, parse_args
from octo_like.envs.transfer.transfer_report import budget_text, execution_text, write_report
from octo_like.envs.transfer.transfer_scope import EntryPoints, PretrainingScope, check_targets

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"
TARGET = Target("wrist", "wrist", ("reach",))


def benchmark_args(tmp_path, *flags: str):
    budget = ["--demos", "2", "--steps", "3", "--batch_size", "8", "--eval_episodes", "1"]
    return parse_args(["--workdir", str(tmp_path), *budget, "--max_steps", "4", *flags])


HERE = {"commit": "0123456789ab", "cpu": "AMD EPYC, family 25 model 17"}
WEIGHTS = "step 6000 sha256 feedfacecafebeef"  # a pretrained step's fingerprint


def made_at(*results: ArmResult, where=HERE) -> list[ArmResult]:
    for result in results:
        result.provenance.update({"train": dict(where), "evaluate": dict(where)})
    return list(results)


def test_the_report_writes_the_budget_the_table_the_chart_and_json_last(tmp_path, capsys):
    args = benchmark_args(tmp_path, "--exec_horizon", "2")
    results = made_at(
        ArmResult(Arm(TARGET, "full", 0, 2), {"reach": (1, 1)}, 2.0, 1.5),
        ArmResult(Arm(TARGET, "scratch", 0, 2), {"reach": (0, 1)}, 3.0, 1.0),
    )
    rows = write_report(args, results, "/ckpt", [0])
    budget = (
        "2 demos/task, 3 steps at batch 8, seeds [0], 1 episodes/task/seed "
        "(max 4 steps, receding, 2 actions/chunk), pretrained: /ckpt"
    )
    where = "every arm at commit 0123456789ab on AMD EPYC, family 25 model 17"
    command = f"command: python scripts/benchmark_transfer.py --workdir {tmp_path} --demos 2"
    text = (tmp_path / "transfer.txt").read_text()
    header = text.splitlines()[:4]
    assert header[:2] == [f"# {budget}", f"# {where}"] and header[2].startswith(f"# {command}")
    assert header[3].startswith("target ") and "gap to scratch" in text
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"# {budget}" and printed[-2] == f"chart: {tmp_path / 'transfer.png'}"
    line = json.loads(printed[-1])
    assert line == json.loads((tmp_path / "transfer.jsonl").read_text())
    assert line["rows"] == json.loads(json.dumps(rows)) and line["exec_horizon"] == 2
    assert (line["train_seconds"], line["eval_seconds"], line["pretrained"]) == (5.0, 2.5, "/ckpt")
    assert line["provenance"] == where and line["demo_counts"] == [2]
    assert "offline_correlations" not in line and "offline numbers" not in text  # none recorded
    assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_the_curve_flags_take_several_counts_and_collect_the_largest(tmp_path):
    args = benchmark_args(tmp_path, "--demos", "10,5,25,10")
    assert args.demo_counts == (5, 10, 25) and args.demos == 25
    assert budget_text(args, [0, 1], "/c").startswith("5,10,25 demos/task (nested per seed),")
    for bad in ("5,x", "0,5", ""):
        with pytest.raises(SystemExit):
            benchmark_args(tmp_path, "--demos", bad)
    first = benchmark_args(tmp_path, "--demos", "5,10", "--collect_demos", "50")
    assert first.demo_counts == (5, 10) and first.demos == 50  # the whole curve's collection
    with pytest.raises(SystemExit):
        benchmark_args(tmp_path, "--demos", "5,10", "--collect_demos", "8")
    assert first.data_dir == str(tmp_path / "data")  # one workdir, its own collection
    shared = benchmark_args(tmp_path / "recipe_b", "--data_dir", str(tmp_path / "data"))
    assert shared.data_dir == first.data_dir  # several recipes' workdirs, one collection


def test_a_report_of_one_commit_and_machine_passes_and_a_mixed_one_is_refused_or_flagged(
    tmp_path, capsys
):
    curve = benchmark_args(tmp_path, "--demos", "1,2", "--seeds", "0,1")
    per_task = {"reach": (1, 2)}
    arms = [Arm(TARGET, mode, seed, demos) for seed in (0, 1) for demos in (1, 2)
            for mode in ("full", "scratch")]  # fmt: skip
    healthy = made_at(*(ArmResult(arm, per_task) for arm in arms))
    rows = write_report(curve, healthy, "/ckpt", [0, 1])  # one commit, one CPU: accepted
    assert {(r["demos"], r["mode"]) for r in rows} == {
        (1, "full"), (1, "scratch"), (2, "full"), (2, "scratch")
    }  # fmt: skip
    assert rows[0]["gap_to_scratch"]["paired"]["differences"] == [0.0, 0.0]

    other = dict(HERE, commit="fedcba987654")
    mixed = healthy[:-1] + made_at(ArmResult(arms[-1], per_task), where=other)
    odd = "fedcba987654 on AMD EPYC, family 25 model 17: wrist/2demos/scratch/seed1 (train), "
    with pytest.raises(
        ValueError, match=f"MIXED: commits 0123456789ab, fedcba987654; .*{re.escape(odd)}"
    ):
        write_report(curve, mixed, "/ckpt", [0, 1])
    unrecorded = healthy[:-1] + [ArmResult(arms[-1], per_task)]  # saved before arms kept it
    with pytest.raises(ValueError, match="wrist/2demos/scratch/seed1 do not record"):
        write_report(curve, unrecorded, "/ckpt", [0, 1])
    allowed = benchmark_args(
        tmp_path, "--demos", "1,2", "--seeds", "0,1", "--allow_mixed_provenance"
    )
    capsys.readouterr()
    write_report(allowed, mixed, "/ckpt", [0, 1])
    header = (tmp_path / "transfer.txt").read_text().splitlines()[1]
    assert (
        header
        == "# MIXED: commits 0123456789ab, fedcba987654; CPU models AMD EPYC, family 25 model 17"
    )


def test_the_execution_is_named_in_the_budget_and_the_results_directory(tmp_path):
    receding = benchmark_args(tmp_path)
    ensemble = benchmark_args(tmp_path, "--execution", "ensemble", "--ensemble_decay", "0.5")
    assert execution_text(receding) == "receding"
    assert execution_text(ensemble) == "ensemble, decay 0.5"
    assert "(max 4 steps, ensemble, decay 0.5)" in budget_text(ensemble, [0, 1], "/ckpt")
    assert transfer_arms.evaluation_tag(receding) == "receding-4steps-1eps-seed0"
    assert transfer_arms.evaluation_tag(ensemble) == "ensemble-d0.5-4steps-1eps-seed0"
    silent = benchmark_args(tmp_path, "--instruction", "empty")  # the words matter? none told
    assert execution_text(silent) == "receding, empty instruction"
    assert transfer_arms.evaluation_tag(silent) == "receding-4steps-1eps-seed0-empty"


def test_the_selection_rule_evaluates_the_lowest_validation_loss_among_saved_checkpoints(
    tmp_path,
):
    args = benchmark_args(tmp_path, "--steps", "600", "--checkpoint_every", "150",
                          "--select", "val_loss")  # fmt: skip
    arm = Arm(TARGET, "full", 0, 2)
    argv = transfer_arms.finetune_argv(args, arm, "/ckpt", "/data", "/configs")
    assert {"--config.checkpoint.save_every=150", "--config.checkpoint.keep_last=5",
            "--config.eval_every=150"} <= set(argv)  # fmt: skip
    assert transfer_arms.evaluation_tag(args) == "receding-4steps-1eps-seed0-val_loss"
    assert "600 steps (evaluated: the lowest validation loss of every 150 steps)" in budget_text(
        args, [0], "/ckpt"
    )
    run = tmp_path / "runs" / arm.key
    run.mkdir(parents=True)
    with pytest.raises(ValueError, match="no validation loss at a saved step"):
        transfer_arms.selected_step(args, arm)
    losses = {150: 0.5, 300: 0.2, 450: 0.2, 600: 0.3, 75: 0.01}  # 75: not a saved step
    lines = [{"step": s, "split": "val", "loss": v} for s, v in losses.items()]
    lines.append({"step": 300, "split": "train", "loss": 0.0})  # training loss: not read
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert transfer_arms.selected_step(args, arm) == 450  # the tie goes to the later step
    last = benchmark_args(tmp_path, "--steps", "600", "--checkpoint_every", "150")
    assert transfer_arms.selected_step(last, arm) == 600
    for bad in (["--checkpoint_every", "7"], ["--select", "val_loss"]):
        with pytest.raises(SystemExit):
            benchmark_args(tmp_path, "--steps", "600", *bad)


def test_every_arm_of_a_target_trains_with_one_command_but_its_mode(tmp_path):
    args = benchmark_args(tmp_path, "--finetune_arg=--config.data.shuffle_buffer=64")
    subset = "train[0:2]+train[5:6]"
    full, scratch = (
        transfer_arms.finetune_argv(
            args, Arm(TARGET, mode, 1, 2), "/ckpt", "/data", "/configs", subset
        )
        for mode in ("full", "scratch")
    )
    differ = [(a, b) for a, b in zip(full, scratch, strict=True) if a != b]
    assert differ == [
        ("--config=/configs/finetune.py:full,language",
         "--config=/configs/finetune.py:scratch,language"),
        (f"--workdir={tmp_path}/runs/wrist/2demos/full/seed1",
         f"--workdir={tmp_path}/runs/wrist/2demos/scratch/seed1"),
    ]  # fmt: skip
    assert "--config.model.action_dim=4" in full and "--config.seed=1" in full
    assert f"--config.dataset.split={subset}" in full  # both arms: the same demonstrations
    assert full[-1] == "--config.data.shuffle_buffer=64"


REPO = SCRIPTS.parent


def test_a_recipe_arm_is_its_mode_with_its_flags_last_through_finetunes_own_parser(tmp_path):
    import finetune

    relang = "--config.reinitialize=('^language_encoder/',)"
    args = benchmark_args(tmp_path, "--finetune_arg=--config.optimizer.learning_rate=1e-3",
                          f"--recipe=relang=full:{relang}")  # fmt: skip
    arms = {m: Arm(TARGET, m, 1, 2) for m in ("full", "relang", "scratch")}
    argv = {
        m: transfer_arms.finetune_argv(args, arm, "/ckpt", "/data", str(REPO / "configs"))
        for m, arm in arms.items()
    }
    parsed = {m: finetune.parse_command_line(a)[0] for m, a in argv.items()}
    assert parsed["full"].reinitialize == () and parsed["scratch"].reinitialize == ()
    assert parsed["relang"].reinitialize == ("^language_encoder/",)
    assert parsed["relang"].mode == "full" and parsed["scratch"].mode == "scratch"
    assert {p.optimizer.learning_rate for p in parsed.values()} == {1e-3}  # every arm's flag
    differ = [(a, b) for a, b in zip(argv["full"], argv["relang"][:-1], strict=True) if a != b]
    assert differ == [(f"--workdir={tmp_path}/runs/wrist/2demos/full/seed1",
                       f"--workdir={tmp_path}/runs/wrist/2demos/relang/seed1")]  # fmt: skip
    programs = EntryPoints(str(REPO / "configs"), None, finetune)
    transfer_arms.check_arm_commands(args, list(arms.values()), programs)  # healthy: accepted
    typo = benchmark_args(tmp_path, "--recipe=relang=full:--config.reinitialise=('^head/',)")
    with pytest.raises(ValueError, match=r"relang/seed1 \(relang\).*reinitialise"):
        transfer_arms.check_arm_commands(typo, list(arms.values()), programs)
    for bad in ("--recipe=relang=full", "--recipe=scratch=full:--config.seed=1"):
        with pytest.raises(SystemExit):
            benchmark_args(tmp_path, bad)


def test_the_report_names_each_recipe_and_compares_it_with_its_mode(tmp_path):
    args = benchmark_args(tmp_path, "--recipe=stats=full:--config.statistics_from=pretrained")
    per_seed = {"full": ((1, 2), (0, 2)), "stats": ((2, 2), (2, 2)), "scratch": ((0, 2), (1, 2))}
    results = made_at(*(
        ArmResult(Arm(TARGET, mode, seed, 2), {"reach": counts})
        for mode, by_seed in per_seed.items() for seed, counts in enumerate(by_seed)
    ))  # fmt: skip
    rows = write_report(args, results, "/ckpt", [0, 1])
    stats = next(row for row in rows if row["mode"] == "stats")
    assert stats["gap_to_mode"]["paired"]["differences"] == [0.5, 1.0]
    text = (tmp_path / "transfer.txt").read_text()
    assert "vs full: +0.75 [" in text and "per-seed differences +0.50 +1.00" in text
    line = json.loads((tmp_path / "transfer.jsonl").read_text())
    assert line["recipes"] == {"stats": ["full", "--config.statistics_from=pretrained"]}


def cameras_config():
    return types.SimpleNamespace(
        model=types.SimpleNamespace(image_tokenizers="pretrained's"),
        data=types.SimpleNamespace(frame=types.SimpleNamespace(cameras="pretrained's")),
    )


def test_a_camera_the_pretrained_model_lacks_gets_a_tokenizer_and_a_size():
    kept = cameras_config()
    transfer_arms.set_cameras(kept, "default", ("primary",))
    assert kept == cameras_config()  # its own cameras, augmented: the defaults stand

    config = cameras_config()
    transfer_arms.set_cameras(config, "wrist", ("primary",))
    assert config.model.image_tokenizers == (dict(camera="primary"), dict(camera="wrist"))
    cameras = config.data.frame.cameras
    assert cameras["primary"] == dict(size=None, augment={})
    assert cameras["wrist"]["size"][0] > 0 and cameras["wrist"]["augment"] is None

    fixed = cameras_config()
    transfer_arms.set_cameras(fixed, "default", ("primary",), crop=False)
    assert fixed.model.image_tokenizers == "pretrained's"
    assert fixed.data.frame.cameras == {
        "primary": dict(size=None, augment=dict(random_resized_crop_scale=None))
    }


def test_a_saved_arm_is_reused_and_one_trained_with_another_command_is_refused(tmp_path):
    args = benchmark_args(tmp_path)
    # Any training call fails: no finetune.py to train through.
    untrainable = transfer_arms.ArmSetup(
        "/ckpt", ("primary",), EntryPoints("/configs", None), HERE, WEIGHTS
    )
    arm = Arm(TARGET, "full", 0, 2)
    argv = transfer_arms.finetune_argv(args, arm, "/ckpt", "/data", "/configs")
    command = transfer_arms.arm_command(args, argv, WEIGHTS)
    saved = made_at(ArmResult(arm, {"reach": (1, 1)}, 2.0, 1.0, command=command))[0]
    path = transfer_arms.result_path(args, arm)
    transfer_arms.save_result(path, saved)
    assert transfer_arms.run_arm(args, arm, untrainable, "/data") == saved
    # A result of other demonstrations (another collection, or another subset) is not reused.
    with pytest.raises(ValueError, match=r"arm wrist/2demos/full/seed0: .* another command"):
        transfer_arms.run_arm(args, arm, untrainable, "/data", "train[0:1]")
    with pytest.raises(ValueError, match="another command"):
        transfer_arms.run_arm(args, arm, untrainable, "/other_collection")
    fixed_camera = benchmark_args(tmp_path, "--no_crop")  # same command line, other cameras
    with pytest.raises(ValueError, match="another command"):
        transfer_arms.run_arm(fixed_camera, arm, untrainable, "/data")
    pretrained_again = untrainable._replace(fingerprint="step 6000 sha256 0123456789abcdef")
    with pytest.raises(ValueError, match="another command"):  # same path, other weights
        transfer_arms.run_arm(args, arm, pretrained_again, "/data")
    transfer_arms.check_saved_provenance(args, [arm], HERE)  # made here: fine before any work
    elsewhere = dict(HERE, cpu="Intel Xeon")
    with pytest.raises(ValueError, match="MIXED: .*Intel Xeon: this run"):
        transfer_arms.check_saved_provenance(args, [arm], elsewhere)
    mixing = benchmark_args(tmp_path, "--allow_mixed_provenance")
    transfer_arms.check_saved_provenance(mixing, [arm], elsewhere)

    run = pathlib.Path(transfer_arms.run_dir(args, arm))
    run.mkdir(parents=True)
    record = {"argv": argv, "crop": True, "pretrained": WEIGHTS, "seconds": 7.5, "provenance": HERE}
    (run / "trained.json").write_text(json.dumps(record))
    assert transfer_arms.train_arm(args, arm, untrainable, "/data") == (7.5, HERE)
    with pytest.raises(ValueError, match="another command.*pretrained step 6000 sha256 feed"):
        transfer_arms.train_arm(args, arm, pretrained_again, "/data")
    (run / "trained.json").write_text(json.dumps({**record, "argv": argv[:-1]}))
    with pytest.raises(ValueError, match="arm wrist/2demos/full/seed0 .* another command"):
        transfer_arms.train_arm(args, arm, untrainable, "/data")
    other_subset = transfer_arms.finetune_argv(args, arm, "/ckpt", "/data", "/configs", "train[:1]")
    (run / "trained.json").write_text(json.dumps({**record, "argv": other_subset}))
    with pytest.raises(ValueError, match="another command"):  # other demonstrations: not reused
        transfer_arms.train_arm(args, arm, untrainable, "/data")


def test_targets_are_checked_against_known_tasks_and_warned_about_unknown(caplog):
    known = PretrainingScope(("reach", "push"), ("front",))
    check_targets([Target("test", "front", ("door-open",))], known, "ckpt")  # held out: fine
    with pytest.raises(ValueError, match="target 'leak': reach on 'front' were in pretraining"):
        check_targets([Target("leak", "front", ("reach",))], known, "ckpt")
    with caplog.at_level(logging.WARNING, logger="benchmark_transfer"):
        check_targets([Target("leak", "front", ("reach",))], PretrainingScope(None, ()), "ckpt")
    assert "ckpt: its pretraining tasks are unknown" in caplog.text


def test_default_targets_are_unseen_tasks_and_two_new_embodiments():
    assert default_targets(("reach", "push", "pick-place")) == [
        "heldout=assembly,basketball,bin-picking",
        "metric7=reach,push@metric7",
        "wrist=reach,push@wrist",
    ]


def imported_modules(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_script_imports_a_script():
    """benchmark_transfer.py and transfer_pretraining.py imported each other (and evaluate.py):
    the logic scripts share lives in the package."""
    scripts = {path.stem: path for path in SCRIPTS.glob("*.py")}
    offenders = {
        name: sorted(imported_modules(path) & (set(scripts) - {name}))
        for name, path in scripts.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("script", ["benchmark_transfer", "transfer_pretraining", "evaluate"])
def test_the_scripts_are_thin_entry_points(script):
    assert len((SCRIPTS / f"{script}.py").read_text().splitlines()) <= 150


def test_a_zero_shot_row_saved_before_commands_were_kept_is_made_again_and_kept_aside(tmp_path):
    args = benchmark_args(tmp_path)
    arm = Arm(TARGET, "zero_shot", 0)
    path = transfer_arms.result_path(args, arm)
    command = ("zero_shot", "/ckpt", "metaworld_wrist")
    current = made_at(ArmResult(arm, {"reach": (1, 2)}, command=command))[0]
    transfer_arms.save_result(path, current)
    assert transfer_arms.reusable(path, arm, command) == current  # made by this command: reused
    with pytest.raises(ValueError, match="zero_shot/seed0: .* another command"):
        transfer_arms.reusable(path, arm, ("zero_shot", "/other_ckpt", "metaworld_wrist"))
    old = ArmResult(arm, {"reach": (0, 2)})  # an older benchmark's: no command, no provenance
    transfer_arms.save_result(path, old)
    assert transfer_arms.reusable(path, arm, command) is None  # to be evaluated again
    assert transfer_arms.load_result(path + ".unrecorded") == old  # and not lost


def test_reports_of_other_evaluations_of_the_same_arms_sit_beside_the_canonical_one(tmp_path):
    results = made_at(
        ArmResult(Arm(TARGET, "full", 0, 2), {"reach": (1, 1)}),
        ArmResult(Arm(TARGET, "scratch", 0, 2), {"reach": (0, 1)}),
    )
    canonical = benchmark_args(tmp_path)
    assert canonical.report == "transfer"
    write_report(canonical, results, "/ckpt", [0])
    first = (tmp_path / "transfer.txt").read_text()
    silent = benchmark_args(tmp_path, "--instruction", "empty", "--steps", "6",
                            "--checkpoint_every", "3", "--select", "val_loss")  # fmt: skip
    assert silent.report == "transfer-empty-val_loss"
    write_report(silent, results[:1] + made_at(
        ArmResult(Arm(TARGET, "scratch", 0, 2), {"reach": (1, 1)})), "/ckpt", [0])  # fmt: skip
    assert (tmp_path / "transfer.txt").read_text() == first  # not overwritten
    other = (tmp_path / "transfer-empty-val_loss.txt").read_text()
    assert "empty instruction" in other and other != first
    line = json.loads((tmp_path / "transfer-empty-val_loss.jsonl").read_text())
    assert [r["successes"] for r in line["rows"] if r["mode"] == "scratch"] == [1]
    assert (tmp_path / "transfer-empty-val_loss.png").read_bytes()[:4] == b"\x89PNG"
    named = benchmark_args(tmp_path, "--report", "sitting_2.v1")
    assert named.report == "sitting_2.v1"
    for bad in ("../elsewhere", "a b", ""):
        with pytest.raises(SystemExit):
            benchmark_args(tmp_path, "--report", bad)


def test_the_pretrained_fingerprint_names_the_weights_not_their_path(tmp_path):
    import shutil

    from octo_like.training.finetuning.finetune_config import read_pretrained
    from tests.training.test_finetune import tiny_batch, tiny_config, tiny_model

    def fingerprint(path) -> str:
        return transfer_arms.pretrained_fingerprint(read_pretrained(str(path)))

    path = tmp_path / "checkpoints"
    tiny_model(tiny_config(), tiny_batch(), seed=0).save_pretrained(10, str(path))
    first = fingerprint(path)
    assert re.fullmatch(r"step 10 sha256 [0-9a-f]{16}", first) and fingerprint(path) == first
    shutil.copytree(path, tmp_path / "copied")
    assert fingerprint(tmp_path / "copied") == first  # the same weights anywhere
    shutil.rmtree(path)
    tiny_model(tiny_config(), tiny_batch(), seed=1).save_pretrained(10, str(path))
    assert fingerprint(path) != first  # pretrained again at the same path: other weights
    (path / "10" / "checksums.json").unlink()
    assert fingerprint(path) == "step 10 unverified"


def test_an_arm_records_the_offline_numbers_of_the_step_it_evaluated(tmp_path, monkeypatch):
    """Issue 67 correlates success with the evaluated step's validation metrics and training
    loss, read from the run's metrics.jsonl; null where validation did not log that step."""
    monkeypatch.setattr(transfer_arms, "train_arm", lambda *a: (1.0, HERE))
    evaluated = ({"reach": (1, 2)}, 0.5)
    monkeypatch.setattr(transfer_arms, "evaluate_checkpoint", lambda *a, **k: evaluated)
    setup = transfer_arms.ArmSetup(
        "/ckpt", ("primary",), EntryPoints("/configs", None), HERE, WEIGHTS
    )
    arm = Arm(TARGET, "full", 0, 2)
    val3 = {"loss": 0.1, "mse": 0.1, "sampled_mse": 2.0, "xyz_angle": 0.3, "xyz_accuracy": 0.5,
            "gripping_accuracy": 1.0}  # fmt: skip
    lines = [
        {"step": 3, "split": "train", "loss": 0.4},
        {"step": 3, "split": "val", **val3},
        {"step": 6, "split": "train", "loss": 0.2},
        {"step": 6, "split": "val", "loss": 0.3, "sampled_mse": 1.0},
        {"step": 6, "split": "sim", "success": 1.0},
    ]

    def arm_run(name, metrics, *flags):
        args = benchmark_args(tmp_path / name, *flags)
        run = pathlib.Path(transfer_arms.run_dir(args, arm))
        run.mkdir(parents=True)
        if metrics is not None:
            (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        result = transfer_arms.run_arm(args, arm, setup, "/data")
        saved = json.loads(pathlib.Path(transfer_arms.result_path(args, arm)).read_text())
        assert saved["offline"] == result.offline and saved["per_task"] == {"reach": [1, 2]}
        assert transfer_arms.run_arm(args, arm, setup, "/data") == result  # reused, numbers kept
        return result

    chosen = arm_run("val_loss", lines, "--steps", "6", "--checkpoint_every", "3",
                     "--select", "val_loss")  # fmt: skip
    del val3["mse"]  # not one of the offline numbers
    assert chosen.step == 3 and chosen.offline == {"step": 3, **val3, "train_loss": 0.4}
    assert arm_run("last", lines, "--steps", "6").offline == {
        "step": 6, "loss": 0.3, "sampled_mse": 1.0, "train_loss": 0.2
    }  # fmt: skip
    assert arm_run("unvalidated", lines, "--steps", "5").offline is None  # nothing at step 5
    assert arm_run("no_metrics", None, "--steps", "6").offline is None
    train_only = arm_run("train_only", [*lines[:2], lines[2]], "--steps", "6")
    assert train_only.offline is None  # a training loss alone is not recorded


def test_the_report_correlates_each_offline_number_with_success_when_arms_carry_them(tmp_path):
    args = benchmark_args(tmp_path, "--seeds", "0,1")
    counts = {("full", 0): 4, ("full", 1): 3, ("scratch", 0): 1, ("scratch", 1): 0}
    results = made_at(*(
        ArmResult(Arm(TARGET, mode, seed, 2), {"reach": (s, 4)}, step=3,
                  offline={"step": 3, "loss": 1.0 - s / 4, "sampled_mse": 2.0})
        for (mode, seed), s in counts.items()
    ))  # fmt: skip
    results.append(made_at(ArmResult(Arm(TARGET, "zero_shot", 0), {"reach": (0, 4)}))[0])
    write_report(args, results, "/ckpt", [0, 1])
    text = (tmp_path / "transfer.txt").read_text()
    assert "offline numbers of the evaluated step vs success, over all 5 arms:" in text
    assert re.search(r"\nloss +4 +1  -1\.00 \[-1\.00, -1\.00\]", text)
    assert "sampled_mse" in text and "undefined: the metric is the same for every arm" in text
    line = json.loads((tmp_path / "transfer.jsonl").read_text())
    correlations = line["offline_correlations"]
    assert correlations["loss"]["rho"] == -1.0 and correlations["loss"]["skipped"] == 1
    assert correlations["train_loss"] == {
        "rho": None, "ci95": None, "n": 0, "note": "undefined: fewer than 3 arms", "skipped": 5
    }  # fmt: skip

"""The transfer benchmark's pieces that need no simulator or training run: the report, the arms'
command lines and cameras, result reuse, the leak check's warning, and the scripts as thin
entry points into `octo_like.envs` (the runs end to end are in test_broad_transfer.py and
test_simulation.py)."""

from __future__ import annotations

import ast
import json
import logging
import pathlib
import types

import pytest

from octo_like.envs import transfer_arms
from octo_like.envs.transfer import Arm, ArmResult, Target
from octo_like.envs.transfer_benchmark import default_targets, parse_args
from octo_like.envs.transfer_report import budget_text, execution_text, write_report
from octo_like.envs.transfer_scope import EntryPoints, PretrainingScope, check_targets

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"
TARGET = Target("wrist", "wrist", ("reach",))


def benchmark_args(tmp_path, *flags: str):
    budget = ["--demos", "2", "--steps", "3", "--batch_size", "8", "--eval_episodes", "1"]
    return parse_args(["--workdir", str(tmp_path), *budget, "--max_steps", "4", *flags])


def test_the_report_writes_the_budget_the_table_the_chart_and_json_last(tmp_path, capsys):
    args = benchmark_args(tmp_path, "--exec_horizon", "2")
    results = [
        ArmResult(Arm(TARGET, "full", 0), {"reach": (1, 1)}, 2.0, 1.5),
        ArmResult(Arm(TARGET, "scratch", 0), {"reach": (0, 1)}, 3.0, 1.0),
    ]
    rows = write_report(args, results, "/ckpt", [0])
    budget = (
        "2 demos/task, 3 steps at batch 8, seeds [0], 1 episodes/task/seed "
        "(max 4 steps, receding, 2 actions/chunk), pretrained: /ckpt"
    )
    text = (tmp_path / "transfer.txt").read_text()
    assert text.startswith(f"# {budget}\ntarget ") and "gap to scratch" in text
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"# {budget}" and printed[-2] == f"chart: {tmp_path / 'transfer.png'}"
    line = json.loads(printed[-1])
    assert line == json.loads((tmp_path / "transfer.jsonl").read_text())
    assert line["rows"] == json.loads(json.dumps(rows)) and line["exec_horizon"] == 2
    assert (line["train_seconds"], line["eval_seconds"], line["pretrained"]) == (5.0, 2.5, "/ckpt")
    assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_the_execution_is_named_in_the_budget_and_the_results_directory(tmp_path):
    receding = benchmark_args(tmp_path)
    ensemble = benchmark_args(tmp_path, "--execution", "ensemble", "--ensemble_decay", "0.5")
    assert execution_text(receding) == "receding"
    assert execution_text(ensemble) == "ensemble, decay 0.5"
    assert "(max 4 steps, ensemble, decay 0.5)" in budget_text(ensemble, [0, 1], "/ckpt")
    assert transfer_arms.evaluation_tag(receding) == "receding-4steps-1eps-seed0"
    assert transfer_arms.evaluation_tag(ensemble) == "ensemble-d0.5-4steps-1eps-seed0"


def test_every_arm_of_a_target_trains_with_one_command_but_its_mode(tmp_path):
    args = benchmark_args(tmp_path, "--finetune_arg=--config.data.shuffle_buffer=64")
    full, scratch = (
        transfer_arms.finetune_argv(args, Arm(TARGET, mode, 1), "/ckpt", "/data", "/configs")
        for mode in ("full", "scratch")
    )
    differ = [(a, b) for a, b in zip(full, scratch, strict=True) if a != b]
    assert differ == [
        ("--config=/configs/finetune.py:full,language",
         "--config=/configs/finetune.py:scratch,language"),
        (f"--workdir={tmp_path}/runs/wrist/full/seed1",
         f"--workdir={tmp_path}/runs/wrist/scratch/seed1"),
    ]  # fmt: skip
    assert "--config.model.action_dim=4" in full and "--config.seed=1" in full
    assert full[-1] == "--config.data.shuffle_buffer=64"


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
    untrainable = transfer_arms.ArmSetup("/ckpt", ("primary",), EntryPoints("/configs", None))
    arm = Arm(TARGET, "full", 0)
    saved = ArmResult(arm, {"reach": (1, 1)}, 2.0, 1.0)
    transfer_arms.save_result(transfer_arms.result_path(args, arm), saved)
    assert transfer_arms.run_arm(args, arm, untrainable, "/data") == saved

    run = pathlib.Path(transfer_arms.run_dir(args, arm))
    run.mkdir(parents=True)
    argv = transfer_arms.finetune_argv(args, arm, "/ckpt", "/data", "/configs")
    record = {"argv": argv, "crop": True, "seconds": 7.5}
    (run / "trained.json").write_text(json.dumps(record))
    assert transfer_arms.train_arm(args, arm, untrainable, "/data") == 7.5
    (run / "trained.json").write_text(json.dumps({**record, "argv": argv[:-1]}))
    with pytest.raises(ValueError, match="arm wrist/full/seed0 .* trained with another command"):
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

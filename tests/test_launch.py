"""The launch recipes (scripts/launch.py --dry_run) print runnable commands: each embeds the
same train.py command line, which parses into a valid training config."""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import pytest

import train
from octo_like.training.config import parse_train_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))

import launch  # noqa: E402

TRAIN_ARGS = [
    "--config", "configs/pretrain.py:base,oxe_magic_soup", "--workdir", "runs/octo_base",
    "--config.data_dir=/data/oxe", "--config.model.language.checkpoint_dir=/models/t5-base",
    "--config.mesh.fsdp=8",
]  # fmt: skip


def _train_argv(command: list[str]) -> list[str]:
    start = command.index("train.py")
    return command[start:]


def _check_parses(argv: list[str], tmp_path, platform: str) -> None:
    config, workdir, _, _ = train.parse_command_line(argv)
    typed = parse_train_config(config, str(tmp_path / workdir), generated=train.simulated_datasets)
    assert typed.platform == platform and typed.distributed.enabled is True
    assert typed.mesh.fsdp == 8 and typed.model.transformer == "base"
    assert typed.model.language.checkpoint_dir == "/models/t5-base"


def test_tpu_vm_runs_one_command_on_every_worker(tmp_path, capsys):
    out = launch.main(["tpu-vm", "--tpu", "v4-128", "--zone", "us-central2-b", "--dry_run",
                       "--", *TRAIN_ARGS])  # fmt: skip
    command = out["command"]
    assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-128"]
    assert "--worker=all" in command
    remote = next(c for c in command if c.startswith("--command=")).removeprefix("--command=")
    directory, python_command = remote.split(" && ")
    assert directory == "cd octo_like"
    argv = shlex.split(python_command)
    assert argv[0] == ".venv/bin/python"
    _check_parses(argv[1:], tmp_path, "tpu")
    assert "would run" in capsys.readouterr().out


def test_slurm_writes_a_valid_sbatch_script(tmp_path):
    script = tmp_path / "job.sbatch"
    out = launch.main(["slurm", "--nodes", "4", "--gpus_per_node", "8", "--out", str(script),
                       "--dry_run", "--", *TRAIN_ARGS])  # fmt: skip
    assert out["command"] == ["sbatch", str(script)] and not script.exists()  # dry run
    content = out["content"]
    assert "#SBATCH --nodes=4" in content and "#SBATCH --gpus-per-node=8" in content
    script.write_text(content)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    srun = next(line for line in content.splitlines() if line.startswith("srun "))
    _check_parses(shlex.split(srun)[2:], tmp_path, "gpu")


def test_gke_jobset_lists_the_same_command(tmp_path):
    out = launch.main(["gke", "--name", "octo", "--image", "gcr.io/p/octo:1", "--workers", "64",
                       "--dry_run", "--", *TRAIN_ARGS])  # fmt: skip
    manifest = out["content"]
    assert "kind: JobSet" in manifest and "parallelism: 64" in manifest
    args = [
        line.strip()[2:].strip("'\"")
        for line in manifest.splitlines()
        if line.startswith(("            - '", '            - "'))  # the command's items
    ]
    assert args[:2] == ["python", "train.py"]
    _check_parses(args[1:], tmp_path, "tpu")


def test_a_launch_without_train_flags_is_refused():
    with pytest.raises(SystemExit):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run"])

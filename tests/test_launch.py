"""The launch recipes (scripts/launch.py --dry_run) produce what each engine accepts, checked
by the engine's own parser where we have it: the GKE JobSet through PyYAML, the sbatch script
and the TPU VM remote commands through `bash -n`; each embeds a train.py command line that
parses into a valid training config; the Dockerfile installs what the manifest runs."""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import pytest
import yaml

import train
from octo_like.training.config import parse_train_config

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import launch  # noqa: E402

TRAIN_ARGS = [
    "--config", "configs/pretrain.py:base,oxe_magic_soup", "--workdir", "gs://b/runs/octo_base",
    "--config.data_dir=/data/oxe", "--config.model.language.checkpoint_dir=/models/t5-base",
    "--config.mesh.fsdp=8",
]  # fmt: skip
SHARED = ["--workdir", "/nfs/runs/octo_base", "--config.distributed.shared_workdir=True"]


def _check_parses(argv: list[str], tmp_path, platform: str) -> None:
    config, workdir, _, _ = train.parse_command_line(argv)
    typed = parse_train_config(config, workdir, generated=train.simulated_datasets)
    assert typed.platform == platform and typed.distributed.enabled is True
    assert typed.mesh.fsdp == 8 and typed.model.transformer == "base"
    assert typed.model.language.checkpoint_dir == "/models/t5-base"


def _bash_syntax_ok(script: str, tmp_path) -> None:
    path = tmp_path / "check.sh"
    path.write_text(script + "\n")
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _remote(command: list[str]) -> str:
    return next(c for c in command if c.startswith("--command=")).removeprefix("--command=")


def test_tpu_vm_starts_detached_workers_that_log(tmp_path, capsys):
    out = launch.main(["tpu-vm", "--tpu", "v4-128", "--zone", "us-central2-b", "--dry_run",
                       "--", *TRAIN_ARGS])  # fmt: skip
    command = out["command"]
    assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-128"]
    assert "--worker=all" in command
    remote = _remote(command)
    _bash_syntax_ok(remote, tmp_path)
    words = shlex.split(remote)
    assert words[:2] == ["cd", "octo_like"] and "setsid" in words and "nohup" in words
    assert "/dev/null" in words and "&" in remote  # detached: survives the ssh session
    start = words.index(".venv/bin/python")
    argv = words[start + 1 : words.index(">>")]
    _check_parses(argv, tmp_path, "tpu")
    log = words[words.index(">>") + 1]
    assert log.startswith("~/octo_like_logs/octo_base/worker-")  # gs:// workdir: local logs
    assert "would run" in capsys.readouterr().out


def test_tpu_vm_status_and_stop_are_valid_remote_commands(tmp_path):
    common = ["--tpu", "v4-128", "--zone", "z", "--dry_run"]
    status = launch.main(["tpu-vm-status", *common, "--workdir", "/nfs/runs/octo_base"])
    remote = _remote(status["command"])
    _bash_syntax_ok(remote, tmp_path)
    assert "pgrep -af train.py" in remote and "/nfs/runs/octo_base/logs/worker-" in remote
    stop = launch.main(["tpu-vm-stop", *common, "--kill_after", "120"])
    remote = _remote(stop["command"])
    _bash_syntax_ok(remote, tmp_path)
    assert remote.startswith("pkill -TERM -f train.py") and "sleep 120; pkill -KILL" in remote


def test_slurm_writes_an_sbatch_script_that_saves_on_preemption(tmp_path):
    script = tmp_path / "job.sbatch"
    args = [*TRAIN_ARGS[:2], *SHARED, *TRAIN_ARGS[4:]]
    out = launch.main(["slurm", "--nodes", "4", "--gpus_per_node", "8", "--cpus_per_task", "48",
                       "--out", str(script), "--dry_run", "--", *args])  # fmt: skip
    assert out["command"] == ["sbatch", str(script)] and not script.exists()  # dry run
    content = out["content"]
    _bash_syntax_ok(content, tmp_path)
    directives = dict(
        line.removeprefix("#SBATCH ").split("=", 1) if "=" in line else (line[8:], True)
        for line in content.splitlines()
        if line.startswith("#SBATCH ")
    )
    assert directives["--nodes"] == "4" and directives["--ntasks-per-node"] == "1"
    assert directives["--cpus-per-task"] == "48" and directives["--gpus-per-node"] == "8"
    assert directives["--signal"] == "TERM@300" and directives["--requeue"] is True
    srun = next(line for line in content.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    _check_parses(words[words.index(".venv/bin/python") + 1 :], tmp_path, "gpu")


def test_gke_jobset_is_yaml_with_what_a_tpu_node_pool_needs(tmp_path):
    out = launch.main(["gke", "--name", "octo", "--image", "gcr.io/p/octo:1",
                       "--tpu_accelerator", "tpu-v5-lite-podslice", "--tpu_topology", "16x16",
                       "--dry_run", "--", *TRAIN_ARGS])  # fmt: skip
    manifest = yaml.safe_load(out["content"])
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
    (replicated,) = manifest["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 64  # 256 chips, 4 per host
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "16x16",
    }
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["google.com/tpu"] == 4
    assert container["resources"]["requests"]["google.com/tpu"] == 4
    assert container["command"][:2] == ["python", "train.py"]
    _check_parses(container["command"][1:], tmp_path, "tpu")
    # The image the manifest runs: the Dockerfile installs `.[tpu]` with the lock at workingDir.
    instructions = [
        line.split(None, 1)
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    workdirs = [rest for op, rest in instructions if op == "WORKDIR"]
    assert workdirs == [container["workingDir"]]
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert '-c requirements.lock -e ".[tpu]"' in runs


def test_gke_workers_must_agree_with_the_topology():
    with pytest.raises(SystemExit, match="disagrees with tpu-v4-podslice 4x4x4: 64 chips"):
        launch.main(["gke", "--name", "x", "--image", "i", "--tpu_accelerator",
                     "tpu-v4-podslice", "--tpu_topology", "4x4x4", "--workers", "8",
                     "--dry_run", "--", *TRAIN_ARGS])  # fmt: skip


def test_a_local_workdir_for_a_cluster_is_refused_before_launching():
    args = [*TRAIN_ARGS[:2], "--workdir", "runs/octo_base", *TRAIN_ARGS[4:]]
    with pytest.raises(SystemExit, match="runs/octo_base is a local path"):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run", "--", *args])


def test_a_launch_without_train_flags_is_refused():
    with pytest.raises(SystemExit):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run"])

"""The launch recipes (scripts/launch.py --dry_run, octo_like/launch/) produce what each engine
accepts, checked by the engine's own parser where we have it: the GKE JobSet through PyYAML, the
sbatch script and the TPU VM remote commands through `bash -n`; each embeds a train.py command
line that parses into a valid training config; the Dockerfile installs what the manifest runs.
A TPU launch compiles its step for the slice first (`octo_like/launch/gate.py`): the recipe
tests skip that (base on a v4-128 compiles for two minutes); the gate's own tests compile the
`debug` preset for a 4-chip v5e slice, once fitting and once not."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
import uuid

import pytest
import yaml

import train
from octo_like.training.config import parse_train_config

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import launch  # noqa: E402

from octo_like.launch import gke, recipes, slices  # noqa: E402

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
                       "--skip_compile_check", "--", *TRAIN_ARGS])  # fmt: skip
    command = out["command"]
    assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-128"]
    assert "--worker=all" in command
    remote = _remote(command)
    _bash_syntax_ok(remote, tmp_path)
    words = shlex.split(remote)
    assert words[:2] == ["cd", "octo_like"] and "setsid" in words and "nohup" in words
    assert "/dev/null" in words and "&" in words  # detached: survives the ssh session
    start = words.index(".venv/bin/python")
    argv = words[start + 1 : words.index(">>")]
    _check_parses(argv, tmp_path, "tpu")
    log = words[words.index(">>") + 1]
    assert log.startswith("~/octo_like_logs/octo_base/worker-")  # gs:// workdir: local logs
    printed = capsys.readouterr().out
    assert "would run" in printed and out["compile_check"] is None
    assert "compile check skipped (--skip_compile_check)" in printed  # said, not silent


def test_tpu_vm_status_and_stop_are_valid_remote_commands(tmp_path):
    common = ["--tpu", "v4-128", "--zone", "z", "--dry_run"]
    status = launch.main(["tpu-vm-status", *common, "--workdir", "/nfs/runs/octo_base"])
    remote = _remote(status["command"])
    _bash_syntax_ok(remote, tmp_path)
    pattern = shlex.quote(recipes.train_process_pattern())
    assert f"pgrep -af {pattern}" in remote and "/nfs/runs/octo_base/logs/worker-" in remote
    stop = launch.main(["tpu-vm-stop", *common, "--kill_after", "120"])
    remote = _remote(stop["command"])
    _bash_syntax_ok(remote, tmp_path)
    assert remote.startswith(f"pkill -TERM -f {pattern}") and "sleep 120; pkill -KILL" in remote


def test_the_process_pattern_finds_train_py_and_not_the_shell_that_looks_for_it():
    pattern = re.compile(recipes.train_process_pattern())
    assert pattern.search(".venv/bin/python train.py --config configs/pretrain.py:base")
    assert pattern.search("/usr/bin/python3.11 train.py")
    assert not pattern.search(f"bash -c pkill -TERM -f {recipes.train_process_pattern()}")
    assert not pattern.search("bash -c pkill -f train.py && echo sent")
    assert not pattern.search("vim train.py") and not pattern.search("python train.pyc")


def test_tpu_vm_recipe_detaches_reports_and_stops_with_a_save(tmp_path, monkeypatch):
    """The three remote commands run as sshd runs them (`bash -c`) on a fake checkout whose
    train script saves on SIGTERM: the launch returns while training goes on, status finds the
    process and its log, stop's SIGTERM reaches it (not the shell running stop), and then status
    finds nothing. The script has a name of its own, so no one else's train.py is signalled."""
    script = f"fake_train_{os.getpid()}_{uuid.uuid4().hex[:8]}.py"
    monkeypatch.setattr(recipes, "TRAIN_SCRIPT", script)
    repo, workdir = tmp_path / "repo", tmp_path / "nfs" / "run"
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (repo / script).write_text(FAKE_TRAIN)
    common = ["--tpu", "t", "--zone", "z", "--repo_dir", str(repo), "--dry_run"]

    def on_worker(*argv: str) -> subprocess.CompletedProcess:
        remote = _remote(launch.main([*argv[:1], *common, *argv[1:]])["command"])
        return subprocess.run(["bash", "-c", remote], capture_output=True, text=True, timeout=30)

    def status() -> str:
        return on_worker("tpu-vm-status", "--workdir", str(workdir)).stdout

    try:
        started = on_worker(
            "tpu-vm", "--skip_compile_check", "--", "--workdir", str(workdir), *SHARED[2:]
        )
        assert started.returncode == 0, started.stderr  # returned: ssh would not hang
        pid = int(re.search(r"started pid (\d+)", started.stdout).group(1))
        assert _wait(lambda: "training step 0" in status())
        running = [line for line in status().splitlines() if script in line]
        assert len(running) == 1 and running[0].startswith(f"{pid} ")  # not the shell itself
        stopped = on_worker("tpu-vm-stop", "--kill_after", "1")
        assert stopped.returncode == 0 and "SIGTERM sent" in stopped.stdout, stopped
        assert _wait(lambda: "not running" in status())
        assert "SIGTERM: saved step 0, exiting" in status()
    finally:  # whatever happened, leave nothing running
        subprocess.run(["pkill", "-KILL", "-f", recipes.train_process_pattern()], check=False)


FAKE_TRAIN = """
import signal, sys, time
def save(*_):
    print("SIGTERM: saved step 0, exiting", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
print("training step 0", flush=True)
time.sleep(120)
"""


def _wait(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_slurm_writes_an_sbatch_script_that_saves_on_preemption(tmp_path, capsys):
    script = tmp_path / "job.sbatch"
    args = [*TRAIN_ARGS[:2], *SHARED, *TRAIN_ARGS[4:]]
    out = launch.main(["slurm", "--nodes", "4", "--gpus_per_node", "8", "--cpus_per_task", "48",
                       "--out", str(script), "--dry_run", "--", *args])  # fmt: skip
    assert out["command"] == ["sbatch", str(script)] and not script.exists()  # dry run
    # No compile check for GPU clusters (no compile-only GPU topology without a GPU).
    assert out["compile_check"] is None and "compile check" not in capsys.readouterr().out
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
    assert "--cpus-per-task=48" in words  # a step does not inherit it (Slurm >= 22.05)
    _check_parses(words[words.index(".venv/bin/python") + 1 :], tmp_path, "gpu")


def test_gke_jobset_is_yaml_with_what_a_tpu_node_pool_needs(tmp_path):
    out = launch.main(["gke", "--name", "octo", "--image", "gcr.io/p/octo:1",
                       "--tpu_accelerator", "tpu-v5-lite-podslice", "--tpu_topology", "16x16",
                       "--dry_run", "--skip_compile_check", "--", *TRAIN_ARGS])  # fmt: skip
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
    # The image the manifest runs: the Dockerfile installs `.[tpu]` with the lock at workingDir,
    # its dependencies in a layer of their own, before the code is copied.
    instructions = _dockerfile_instructions(REPO / "Dockerfile")
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert [a for op, a in instructions if op == "WORKDIR"] == [container["workingDir"]]
    copies = [i for i, (op, _) in enumerate(instructions) if op == "COPY"]
    assert [instructions[i][1] for i in copies] == ["setup.py requirements.lock ./", ". ."]
    installs = [
        (i, words)
        for i, (op, command) in enumerate(instructions)
        if op == "RUN"
        for words in (shlex.split(part) for part in command.split("&&"))
        if words[:2] == ["pip", "install"]
    ]
    with_dependencies = [i for i, words in installs if "--no-deps" not in words]
    assert with_dependencies and with_dependencies[0] < copies[1]  # cached across code edits
    for _, words in installs:
        assert words[words.index("-c") + 1] == "requirements.lock"
        assert words[words.index("-e") + 1] == ".[tpu]"


def _dockerfile_instructions(path: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continued lines joined."""
    logical = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in logical.splitlines()]
    return [
        (op.upper(), " ".join(rest.split()))
        for op, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def test_gke_workers_must_agree_with_the_topology():
    with pytest.raises(SystemExit, match="disagrees with tpu-v4-podslice 4x4x4: 64 chips"):
        launch.main(["gke", "--name", "x", "--image", "i", "--tpu_accelerator",
                     "tpu-v4-podslice", "--tpu_topology", "4x4x4", "--workers", "8",
                     "--dry_run", "--skip_compile_check", "--", *TRAIN_ARGS])  # fmt: skip


@pytest.mark.parametrize(
    "accelerator, topology, workers, expected",
    [
        ("tpu-v4-podslice", "4x4x4", None, (16, 4)),
        ("tpu-v4-podslice", "2x2x1", None, (1, 4)),
        ("tpu-v5p-slice", "2x2x2", 2, (2, 4)),
        ("tpu-v5-lite-podslice", "16x16", 64, (64, 4)),
        ("tpu-v5-lite-podslice", "2x2", None, (1, 4)),
        ("tpu-v5-lite-podslice", "1x1", None, (1, 1)),
        ("tpu-v6e-slice", "2x4", None, (1, 8)),  # one 8-chip VM...
        ("tpu-v6e-slice", "2x4", 2, (2, 4)),  # ...or two 4-chip VMs
    ],
)
def test_gke_hosts_follow_from_the_topology(accelerator, topology, workers, expected):
    assert gke.gke_hosts(accelerator, topology, workers) == expected


@pytest.mark.parametrize(
    "topology, workers, message",
    [("16xx", None, "is not like"), ("0x4", None, "is not like"), ("2x4", 4, "1 host"),
     ("3x3", None, "do not split")],
)  # fmt: skip
def test_gke_hosts_refuses_what_no_node_pool_is(topology, workers, message):
    with pytest.raises(SystemExit, match=message):
        gke.gke_hosts("tpu-v5-lite-podslice", topology, workers)


def test_a_local_workdir_for_a_cluster_is_refused_before_launching():
    args = [*TRAIN_ARGS[:2], "--workdir", "runs/octo_base", *TRAIN_ARGS[4:]]
    with pytest.raises(SystemExit, match="runs/octo_base is a local path"):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run", "--", *args])


def test_a_launch_without_train_flags_is_refused():
    with pytest.raises(SystemExit):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run"])


@pytest.mark.parametrize(
    "accelerator_type, topology",
    [("v4-8", "v4:2x2x1"), ("v4-64", "v4:2x4x4"), ("v4-128", "v4:4x4x4"),
     ("v5p-128", "v5p:4x4x4"), ("v5litepod-16", "v5e:4x4"), ("v5e-4", "v5e:2x2"),
     ("v5litepod-256", "v5e:16x16"), ("v6e-8", "v6e:2x4"), ("V6E-256", "v6e:16x16")],
)  # fmt: skip
def test_an_accelerator_type_names_the_topology_the_step_is_compiled_for(
    accelerator_type, topology
):
    assert slices.tpu_vm_topology(accelerator_type) == topology


@pytest.mark.parametrize(
    "accelerator_type, message",
    [("v3-8", "not a TPU slice the compile check knows"), ("v4", "not a TPU slice"),
     ("v4-127", "no default topology of 127 TensorCores"), ("v5litepod-1", "known: v5litepod-4"),
     ("v4-96", "--skip_compile_check")],
)  # fmt: skip
def test_an_accelerator_type_without_a_known_topology_is_named(accelerator_type, message):
    with pytest.raises(SystemExit, match=message):
        slices.tpu_vm_topology(accelerator_type)


def test_gke_names_its_topology_itself():
    assert slices.gke_topology("tpu-v4-podslice", "4x4x4") == "v4:4x4x4"
    assert slices.gke_topology("tpu-v5-lite-podslice", "16x16") == "v5e:16x16"
    assert slices.gke_topology("tpu-v6e-slice", "2x4") == "v6e:2x4"


def test_a_tpu_vm_launch_needs_the_slice_to_compile_for_or_the_skip_flag(capsys):
    with pytest.raises(SystemExit, match="give --accelerator_type .* or --skip_compile_check"):
        launch.main(["tpu-vm", "--tpu", "x", "--zone", "z", "--dry_run", "--", *TRAIN_ARGS])
    assert "would run" not in capsys.readouterr().out


# The smallest step that exercises the gate: the `debug` preset (dummy transformer) on a 4-chip
# v5e slice, its workdir a shared path (no gs:// needed to parse it).
def _debug_args(tmp_path, *overrides: str) -> list[str]:
    return ["--config", "configs/pretrain.py:debug", "--workdir", str(tmp_path / "run"),
            "--config.distributed.shared_workdir=True", *overrides]  # fmt: skip


# What libtpu printed on a CPU host before every report (issue 41.4); none of it applies there.
LIBTPU_NOISE = (
    "Failed to find host bounds",
    "could not determine TPU accelerator type",
    "unexpected worker hostname",
    "Logging before InitGoogle",
)


@pytest.mark.slow
def test_a_step_that_fits_the_slice_is_compiled_then_launched(tmp_path, capsys):
    out = launch.main(["tpu-vm", "--tpu", "octo", "--accelerator_type", "v5litepod-4",
                       "--zone", "z", "--dry_run", "--", *_debug_args(tmp_path)])  # fmt: skip
    printed = capsys.readouterr()
    report = out["compile_check"]
    assert report["fits"] is True and report["topology"] == "v5e:2x2" and report["chips"] == 4
    assert report["device_kind"] == "TPU v5 lite"
    lines = printed.out.splitlines()
    first = next(i for i, line in enumerate(lines) if "compiling the train step" in line)
    assert "v5litepod-4 octo (v5e:2x2)" in lines[first]
    verdict = next(i for i, line in enumerate(lines) if line.endswith("HBM: FITS"))
    launched = lines.index("# would run:")
    assert first < verdict < launched  # checked before anything would start
    assert "the step fits v5litepod-4 octo; launching" in printed.out
    assert out["command"][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    # The check's stderr is passed on as it wrote it: libtpu's start-up noise is not in it.
    for noise in LIBTPU_NOISE:
        assert noise not in printed.err, printed.err


def test_a_step_that_does_not_fit_is_refused_with_the_advice_and_nothing_launched(tmp_path, capsys):
    manifest = tmp_path / "jobset.yaml"
    argv = ["gke", "--name", "octo", "--image", "i", "--tpu_accelerator", "tpu-v5-lite-podslice",
            "--tpu_topology", "2x2", "--out", str(manifest)]  # fmt: skip
    too_big = _debug_args(tmp_path, "--config.data.batch_size=1048576")
    with pytest.raises(SystemExit) as refused:
        launch.main([*argv, "--", *too_big])  # not a dry run: it would write and apply
    message = str(refused.value.code)
    assert message.startswith("refusing to launch: the train step does not fit ")
    assert "tpu-v5-lite-podslice 2x2 (v5e:2x2, 4 x TPU v5 lite)" in message
    assert "GiB per chip of 15.75 GiB HBM" in message or "GiB per chip of 16.00 GiB" in message
    assert "--config.data.batch_size=" in message and "--skip_compile_check" in message
    assert not manifest.exists()  # nothing written, kubectl not run
    assert "DOES NOT FIT" in capsys.readouterr().out  # the check's report came first
    # The skip flag takes the same config through, saying so (and compiles nothing).
    out = launch.main([*argv, "--dry_run", "--skip_compile_check", "--", *too_big])
    assert out["compile_check"] is None and not manifest.exists()
    printed = capsys.readouterr().out
    assert "compile check skipped (--skip_compile_check)" in printed
    assert "tpu-v5-lite-podslice 2x2" in printed and "# would run:" in printed

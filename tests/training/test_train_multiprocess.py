"""train.py across two local processes (one CPU device each): both finish with the same global
metrics, only process 0 writes logs and computes statistics, FSDP may span the processes, and
the checkpoint loads as a model."""

from __future__ import annotations

import ast
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from octo_like.training.metrics import read_jsonl

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_metrics(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("finished at step"))
    return ast.literal_eval(line.split("last metrics: ", 1)[1])


@pytest.mark.parametrize(
    "mesh",
    [[], ["--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size_mb=0.01"]],
    ids=["data_parallel", "fsdp_across_processes"],
)
def test_two_processes_train_one_run(tmp_path, mesh):
    """With FSDP over both processes each holds half of every large parameter, so the final
    parameters must be gathered across processes (not `device_get`) to reach the host."""
    port = free_port()
    workdir = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "train.py"),
        "--config", f"{REPO / 'configs/pretrain.py'}:debug",
        "--workdir", str(workdir),
        f"--config.data_dir={tmp_path / 'data'}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.tensorboard=False",
        "--config.eval_every=100",
        "--stop_at_step=2",
        *mesh,
    ]  # fmt: skip
    children = []
    for process_id in range(2):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "OCTO_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "OCTO_NUM_PROCESSES": "2",
            "OCTO_PROCESS_ID": str(process_id),
        }
        log = open(tmp_path / f"process{process_id}.log", "w")  # noqa: SIM115
        children.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT), log))  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while any(c.poll() is None for c, _ in children) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for child, log in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)  # JAX ignores SIGTERM
            child.wait(timeout=30)
            log.close()
    outputs = [(tmp_path / f"process{i}.log").read_text() for i in range(2)]
    for (child, _), output in zip(children, outputs, strict=True):
        assert child.returncode == 0, output[-3000:]
    assert "runtime: backend cpu" in outputs[0] and "of 2; jax" in outputs[0]
    # Statistics are computed once, by process 0, and sent to process 1 (no second read).
    assert "statistics of synthetic_bridge: computing (cache miss)" in outputs[0]
    assert "statistics of synthetic_bridge: computing" not in outputs[1]
    assert "statistics of 1 dataset(s) received from process 0" in outputs[1]
    if mesh:
        assert "mesh (data=1, fsdp=2) over 2 x cpu" in outputs[0]
    first, second = (last_metrics(o) for o in outputs)
    assert first == second  # metrics are global reductions, identical on every process
    entries = read_jsonl(str(workdir / "metrics.jsonl"))
    assert [e["step"] for e in entries if e["split"] == "train"] == [1, 2]
    from octo_like.model.octo_model import OctoModel

    model = OctoModel.load_pretrained(str(workdir / "checkpoints"))
    assert model.config.transformer == "dummy"


def _launch(tmp_path, port: int, extra: list[str], tag: str):
    """Starts train.py (debug preset) as processes 0 and 1 of a 2-process run."""
    command = [
        sys.executable, str(REPO / "train.py"),
        "--config", f"{REPO / 'configs/pretrain.py'}:debug",
        "--workdir", str(tmp_path / "run"),
        f"--config.data_dir={tmp_path / 'data'}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.tensorboard=False",
        "--config.eval_every=1000",
        *extra,
    ]  # fmt: skip
    children = []
    for process_id in range(2):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "OCTO_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "OCTO_NUM_PROCESSES": "2",
            "OCTO_PROCESS_ID": str(process_id),
        }
        log = open(tmp_path / f"{tag}{process_id}.log", "w")  # noqa: SIM115
        children.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT), log))  # fmt: skip
    return children


def _wait(children, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    try:
        while any(c.poll() is None for c, _ in children) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for child, log in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            log.close()


def test_sigterm_saves_the_same_step_on_both_processes_and_resumes(tmp_path):
    """A preemption notice (SIGTERM to both hosts) ends the run with exit code 0 after both
    processes saved one agreed step; the rerun continues from that step."""
    steps = ["--config.num_steps=400", "--config.checkpoint.save_every=1000"]
    children = _launch(tmp_path, free_port(), steps, "first")
    metrics_file = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and any(c.poll() is None for c, _ in children):
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    for child, _ in children:
        child.send_signal(signal.SIGTERM)
    _wait(children, 120)
    outputs = [(tmp_path / f"first{i}.log").read_text() for i in range(2)]
    for (child, _), output in zip(children, outputs, strict=True):
        assert child.returncode == 0, output[-3000:]
    stopped = [
        int(line.split("stopped at step ")[1].split()[0])
        for output in outputs
        for line in output.splitlines()
        if line.startswith("preempted: stopped at step")
    ]
    assert len(stopped) == 2 and stopped[0] == stopped[1], outputs[0][-2000:]
    step = stopped[0]
    assert 3 <= step < 400
    assert (tmp_path / "run" / "checkpoints" / str(step) / "_CHECKPOINT_METADATA").exists()

    rerun = _launch(tmp_path, free_port(), [*steps, f"--stop_at_step={step + 2}"], "second")
    _wait(rerun, 400)
    outputs = [(tmp_path / f"second{i}.log").read_text() for i in range(2)]
    for (child, _), output in zip(rerun, outputs, strict=True):
        assert child.returncode == 0, output[-3000:]
        assert (
            f"resuming from checkpoint step {step}" in output
            or f"finished at step {step + 2}" in output
        )
        assert f"finished at step {step + 2}" in output
    assert f"resuming from checkpoint step {step}" in outputs[0]
    entries = read_jsonl(str(metrics_file))
    train_steps = [e["step"] for e in entries if e["split"] == "train"]
    assert train_steps == list(range(1, step + 3))


def test_finetune_restores_into_fsdp_shards_spanning_two_processes(tmp_path, bridge_dir):
    """A checkpoint written by one process is fine-tuned by two whose FSDP layout splits the
    parameters across them: the pretrained weights are restored straight into that layout
    (staging them on one local device fails: no cross-host transfers)."""
    pretrain = [
        sys.executable, str(REPO / "train.py"),
        "--config", f"{REPO / 'configs/pretrain.py'}:debug",
        "--workdir", str(tmp_path / "pretrained"),
        f"--config.data_dir={tmp_path / 'data'}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.tensorboard=False", "--stop_at_step=1",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    done = subprocess.run(pretrain, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    command = [
        sys.executable, str(REPO / "finetune.py"),
        "--config", f"{REPO / 'configs/finetune.py'}:full,language",
        "--workdir", str(tmp_path / "finetuned"),
        f"--config.pretrained_path={tmp_path / 'pretrained' / 'checkpoints'}",
        "--config.dataset.name=bridge_dataset", f"--config.dataset.location={bridge_dir}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.tensorboard=False", "--config.data.batch_size=4", "--config.val_split=",
        "--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size_mb=0.01",
        "--stop_at_step=2",
    ]  # fmt: skip
    port, children = free_port(), []
    for process_id in range(2):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "OCTO_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "OCTO_NUM_PROCESSES": "2",
            "OCTO_PROCESS_ID": str(process_id),
        }
        log = open(tmp_path / f"finetune{process_id}.log", "w")  # noqa: SIM115
        children.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT), log))  # fmt: skip
    _wait(children, 400)
    outputs = [(tmp_path / f"finetune{i}.log").read_text() for i in range(2)]
    for (child, _), output in zip(children, outputs, strict=True):
        assert child.returncode == 0, output[-3000:]
        assert "finished at step 2" in output
    assert "mesh (data=1, fsdp=2) over 2 x cpu" in outputs[0]
    assert "parameter reuse from" in outputs[0]
    from octo_like.model.octo_model import OctoModel

    model = OctoModel.load_pretrained(str(tmp_path / "finetuned" / "checkpoints"))
    assert list(model.dataset_statistics) == ["bridge_dataset"]

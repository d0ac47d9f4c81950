"""train.py across two local processes (one CPU device each): both finish with the same global
metrics, only process 0 writes logs, and the checkpoint loads as a model."""

from __future__ import annotations

import ast
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from octo_like.training.metrics import read_jsonl

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_metrics(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("finished at step"))
    return ast.literal_eval(line.split("last metrics: ", 1)[1])


def test_two_processes_train_one_run(tmp_path):
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
    first, second = (last_metrics(o) for o in outputs)
    assert first == second  # metrics are global reductions, identical on every process
    entries = read_jsonl(str(workdir / "metrics.jsonl"))
    assert [e["step"] for e in entries if e["split"] == "train"] == [1, 2]
    from octo_like.model.octo_model import OctoModel

    model = OctoModel.load_pretrained(str(workdir / "checkpoints"))
    assert model.config.transformer == "dummy"

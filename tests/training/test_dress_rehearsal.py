"""Dress rehearsal of pod-scale pretraining on this machine: an OXE mix over fixture datasets
with each member's published feature schema (keys, nesting, encodings, cameras
at their real resolution), a frozen T5 in Hugging Face format read from a URL-scheme filesystem,
two processes with FSDP spanning both. Three launches of the same command:

1. past step 20 (checkpoints at 10 and 20), then one process is SIGKILLed (the other fails its
   next collective and exits 1 at once);
2. the rerun resumes from 20; a preemption notice (SIGTERM to both) makes both save the same
   step N and exit 0;
3. the rerun resumes from N and runs 2 more steps; both report the same global metrics;
4. two processes fine-tune that checkpoint on the real Bridge shard with FSDP across both: the
   pretrained weights are restored straight into that layout (staging them on one local device
   fails: no cross-host transfers).

Checks the per-dataset share of frames against the mix weights (balanced by size) and each
process's peak RSS, and prints each launch's time to its first step by phase.

The mix: `oxe_magic_soup_paths` in `make test` (12 of the 25, taking every conversion path of
the 25: tests/data/test_rehearsal_mix.py), all 25 of `oxe_magic_soup` with `make rehearsal`
(``OCTO_REHEARSAL_MIX=oxe_magic_soup``), which docs/training.md asks for before a pod launch."""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from octo_like.data.oxe.mixes import MIXES
from octo_like.model.checkpoint_layout import finished_steps
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.training.run.metrics import read_jsonl
from tests.data.oxe_cases import write_mix_datasets
from tests.xla_flags import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
T5_URL = "ram://rehearsal/t5"
BATCH, LOG_EVERY, SAVE_EVERY = 8, 2, 10
RSS_LIMIT_GIB = 6.0  # per process: TF + JAX + the input pipeline under data.parallelism's budget
SHARE_P_VALUE = 1e-3  # chi-square test of the frame counts against the mix weights
MIX = os.environ.get("OCTO_REHEARSAL_MIX", "oxe_magic_soup_paths")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 2**20
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return 0.0


class Run:
    """Two train.py processes (one CPU device each) of one multi-host run."""

    def __init__(self, tmp_path, flags: list[str], tag: str):
        port = free_port()
        self.logs = [tmp_path / f"{tag}{i}.log" for i in range(2)]
        self.children, self.peak_rss = [], [0.0, 0.0]
        for process_id in range(2):
            env = {
                **os.environ,
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": xla_flags(devices=1),
                "OCTO_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "OCTO_NUM_PROCESSES": "2",
                "OCTO_PROCESS_ID": str(process_id),
            }
            command = [sys.executable, "-m", "tests.training.rehearsal_child",
                       str(tmp_path / "t5"), T5_URL, *flags]  # fmt: skip
            if flags[0] == "finetune.py":
                command = [sys.executable, str(REPO / "finetune.py"), *flags[1:]]
            log = open(self.logs[process_id], "w")  # noqa: SIM115
            child = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
            self.children.append((child, log))

    def poll(self, until, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            for i, (child, _) in enumerate(self.children):
                self.peak_rss[i] = max(self.peak_rss[i], _peak_rss_gib(child.pid))
            time.sleep(0.25)

    def finish(self, seconds: float) -> list[int]:
        self.poll(lambda: all(c.poll() is not None for c, _ in self.children), seconds)
        for child, log in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            log.close()
        return [child.returncode for child, _ in self.children]

    def output(self, i: int) -> str:
        return self.logs[i].read_text()


def _startup_line(log: str) -> str:
    """The 'time to first step ...' line a run logs at its first step."""
    lines = [line for line in log.splitlines() if "time to first step" in line]
    assert lines, log[-3000:]
    return lines[0][lines[0].index("time to first step") :]


def _complete_steps(checkpoints: pathlib.Path) -> list[int]:
    """Finished steps, none before the run made its checkpoint directory."""
    return finished_steps(str(checkpoints)) if checkpoints.is_dir() else []


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 25 datasets: ~9 min alone; sharing the 2 cores with another test
def test_dress_rehearsal(tmp_path, bridge_dir):  # worker, ~15
    mix = MIXES[MIX]
    write_mix_datasets(str(tmp_path / "data"), mix)
    write_tiny_t5_checkpoint(str(tmp_path / "t5"))
    workdir = tmp_path / "run"
    flags = [
        "--config", f"{REPO / 'configs/pretrain.py'}:tiny,{MIX}",
        "--workdir", str(workdir),
        f"--config.data_dir={tmp_path / 'data'}",
        f"--config.model.language.checkpoint_dir={T5_URL}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.model.transformer=dummy",
        # Decoded at each camera's real resolution, then resized to the smallest inputs the
        # model's patch stems take (the sizes are only config values; 256/128 tripled the step).
        "--config.data.frame.cameras.primary.size=(64, 64)",
        "--config.data.frame.cameras.wrist.size=(32, 32)",
        f"--config.data.batch_size={BATCH}", "--config.data.shuffle_buffer=1000",
        f"--config.log_every={LOG_EVERY}", f"--config.checkpoint.save_every={SAVE_EVERY}",
        "--config.num_steps=40", "--config.val_split=", "--config.tensorboard=False",
        "--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size_mb=0.01",
        "--config.distributed.shared_workdir=True",  # both processes see this local disk
    ]  # fmt: skip

    metrics_file = workdir / "metrics.jsonl"
    logged = lambda: read_jsonl(str(metrics_file)) if metrics_file.exists() else []

    # 1. Past step 20, then SIGKILL one process.
    first = Run(tmp_path, flags, "first")
    first.poll(lambda: any(e["step"] >= 22 for e in logged()), 900)
    first.children[1][0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    codes = first.finish(120)
    # Its peer gone, process 0 fails its next collective and exits 1 at once (it used to print
    # the error and stay alive, blocked at exit, until killed: 60 s here, for nothing).
    assert codes[1] == -signal.SIGKILL and codes[0] == 1, first.output(0)[-3000:]
    assert "JaxRuntimeError" in first.output(0) and "exiting (status 1)" in first.output(0)
    print(f"\nprocess 0 exited {time.monotonic() - killed:.1f} s after its peer was killed")
    assert "runtime: backend cpu (cpu): 2 devices, 1 local; process 0 of 2" in first.output(0)
    assert "mesh (data=1, fsdp=2) over 2 x cpu" in first.output(0)
    # Statistics are computed once, by process 0, and sent to process 1 (no second read).
    assert first.output(0).count("computing (cache miss)") == len(mix)
    assert "computing" not in first.output(1)
    assert f"statistics of {len(mix)} dataset(s) received from process 0" in first.output(1)
    print(f"\nfirst launch, process 0: {_startup_line(first.output(0))}")  # logged by the main
    assert _complete_steps(workdir / "checkpoints")[:2] == [10, 20]
    killed_at = _complete_steps(workdir / "checkpoints")[-1]
    step_s = float(np.median([e["perf/step_s"] for e in logged() if e["step"] > 4]))

    # 2. The rerun resumes; a preemption notice stops both processes at one saved step.
    second = Run(tmp_path, flags, "second")
    resumed = lambda: all(
        f"resuming from checkpoint step {killed_at}" in second.output(i) for i in range(2)
    )
    launched = time.time()
    second.poll(
        lambda: resumed() and any(e["time"] > launched and e["step"] > killed_at for e in logged()),
        600,
    )
    for child, _ in second.children:
        child.send_signal(signal.SIGTERM)
    assert second.finish(300) == [0, 0], second.output(0)[-3000:]
    print(f"resumed launch, process 0: {_startup_line(second.output(0))}")
    stopped = {
        int(line.split("stopped at step ")[1].split()[0])
        for i in range(2)
        for line in second.output(i).splitlines()
        if line.startswith("preempted: stopped at step")
    }
    assert len(stopped) == 1, second.output(0)[-3000:]
    resume_from = stopped.pop()
    assert resume_from > killed_at and resume_from in _complete_steps(workdir / "checkpoints")

    # 3. The rerun continues from the preemption step.
    third = Run(tmp_path, [*flags, f"--stop_at_step={resume_from + 2}"], "third")
    assert third.finish(900) == [0, 0], third.output(0)[-3000:]
    for i in range(2):
        assert f"resuming from checkpoint step {resume_from}" in third.output(i)
        assert f"finished at step {resume_from + 2}" in third.output(i)
    first_metrics, second_metrics = (
        line for i in range(2) for line in third.output(i).splitlines()
        if line.startswith("finished at step")
    )  # fmt: skip
    assert first_metrics == second_metrics  # global reductions, identical on both processes

    # Frames per dataset (process 0's batches) against the size-balanced mix weights.
    train = [e for e in read_jsonl(str(workdir / "metrics.jsonl")) if e["split"] == "train"]
    # Entries past a resume point are dropped on resume: one entry per window, no gaps.
    assert [e["step"] for e in train] == sorted({e["step"] for e in train})
    assert train[-1]["step"] == resume_from + 2
    frames_per_window = LOG_EVERY * BATCH // 2
    counts = {name: 0.0 for name, _ in mix}
    for entry in train:
        for name in counts:
            counts[name] += entry.get(f"data/share/{name}", 0.0) * frames_per_window
    sizes = {}
    for path in (tmp_path / "stats").glob("*.json"):
        name = next(n for n, _ in mix if path.name.startswith(f"{n}_"))
        sizes[name] = json.loads(path.read_text())["num_transitions"]
    weights = np.array([w * sizes[name] for name, w in mix])
    expected = weights / weights.sum()
    observed = np.array([counts[name] for name, _ in mix])
    total = observed.sum()
    chi2 = float(((observed - total * expected) ** 2 / (total * expected)).sum())
    p_value = float(scipy_stats.chi2.sf(chi2, df=len(mix) - 1))
    shares = observed / total
    worst = max(zip(np.abs(shares - expected), [n for n, _ in mix], strict=True))
    peak = max(first.peak_rss + second.peak_rss + third.peak_rss)
    print(
        f"\nrehearsal: {1 / step_s:.2f} steps/s (global batch {BATCH}, 2 processes); "
        f"{total:.0f} frames, chi2={chi2:.1f} (p={p_value:.3f}), worst share "
        f"{worst[1]} off by {worst[0]:.3f}; peak RSS {peak:.2f} GiB; SIGKILL resumed from "
        f"{killed_at}, SIGTERM saved {resume_from}"
    )
    print("shares (observed / expected): " + ", ".join(
        f"{n}: {s:.3f}/{e:.3f}" for (n, _), s, e in zip(mix, shares, expected, strict=True)
    ))  # fmt: skip
    assert p_value > SHARE_P_VALUE, (chi2, dict(zip([n for n, _ in mix], shares, strict=True)))
    assert peak < RSS_LIMIT_GIB
    assert math.isfinite(train[-1]["loss"])

    # 4. Two processes fine-tune the checkpoint on the Bridge shard, FSDP across both.
    fourth = Run(tmp_path, [
        "finetune.py", "--config", f"{REPO / 'configs/finetune.py'}:full,language",
        "--workdir", str(tmp_path / "finetuned"),
        f"--config.pretrained_path={workdir / 'checkpoints'}",
        "--config.dataset.name=bridge_dataset", f"--config.dataset.location={bridge_dir}",
        f"--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--config.tensorboard=False", "--config.data.batch_size=4", "--config.val_split=",
        "--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size_mb=0.01",
        "--config.distributed.shared_workdir=True", "--stop_at_step=2",
    ], "finetune")  # fmt: skip
    assert fourth.finish(600) == [0, 0], fourth.output(0)[-3000:]
    assert "parameter reuse from" in fourth.output(0)
    for i in range(2):
        assert "finished at step 2" in fourth.output(i)
    from octo_like.model.octo_model import OctoModel

    model = OctoModel.load_pretrained(str(tmp_path / "finetuned" / "checkpoints"))
    assert list(model.dataset_statistics) == ["bridge_dataset"]

"""Metric writers, the NaN guard, the progress bar and the plotting script."""

from __future__ import annotations

import io
import json
import math
import pathlib
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from octo_like.training.run import metrics
from octo_like.training.run.metrics import (
    JsonlWriter,
    MetricWriter,
    MultiWriter,
    NullWriter,
    TensorBoardWriter,
    WandbWriter,
    check_finite,
    make_writers,
    read_jsonl,
)
from octo_like.training.run.progress import Progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))

import plot_metrics  # noqa: E402


def test_jsonl_round_trip_and_value_types(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    writer = JsonlWriter(path)
    writer.write(1, {"loss": jnp.float32(0.5), "lr": np.float64(1e-3), "count": 3})
    writer.write(1, {"loss": 0.7}, prefix="val")
    entries = read_jsonl(path)  # flushed per write: readable while the writer is open
    assert [(e["step"], e["split"]) for e in entries] == [(1, "train"), (1, "val")]
    assert entries[0]["loss"] == 0.5 and entries[0]["lr"] == 1e-3 and entries[0]["count"] == 3.0
    assert entries[0]["time"] > 1.6e9
    with pytest.raises(TypeError, match=r"metric 'grads' must be a number, got float32\(2,\)"):
        writer.write(2, {"grads": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="'step' is reserved"):
        writer.write(2, {"step": 1.0})
    writer.close()


def test_jsonl_resume_drops_entries_after_the_checkpoint(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    writer = JsonlWriter(path)
    for step in range(1, 7):
        writer.write(step, {"loss": float(step)})
    writer.write(4, {"loss": 0.4}, prefix="val")
    writer.close()
    with open(path, "a") as f:
        f.write('{"step": 7, "split": "tra')  # the crashed run died mid-line
    assert [e["step"] for e in read_jsonl(path)] == [1, 2, 3, 4, 5, 6, 4]  # torn line skipped
    # Resumed from the checkpoint at step 4: steps 5, 6 (and the torn 7) are redone.
    writer = JsonlWriter(path, resume_step=4)
    writer.write(5, {"loss": 50.0})
    writer.close()
    entries = read_jsonl(path)
    assert [(e["step"], e["split"]) for e in entries] == [
        (1, "train"), (2, "train"), (3, "train"), (4, "train"), (4, "val"), (5, "train")
    ]  # fmt: skip
    assert entries[-1]["loss"] == 50.0
    JsonlWriter(path).close()  # a fresh run (no checkpoint) starts a new file
    assert read_jsonl(path) == []


def test_read_jsonl_names_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
        read_jsonl(str(path))


def test_check_finite_names_metrics_and_step_range():
    check_finite({"loss": 1.0, "grad_norm": jnp.float32(3.0)}, (1, 100))
    with pytest.raises(FloatingPointError, match=r"steps \[101, 200\]: grad_norm=inf, loss=nan"):
        check_finite({"loss": float("nan"), "grad_norm": jnp.inf, "lr": 1e-3}, (101, 200))


def test_tensorboard_writes_scalars(tmp_path):
    import tensorflow as tf

    writer = TensorBoardWriter(str(tmp_path))
    writer.write(3, {"loss": 0.25})
    writer.write(5, {"loss": 0.5}, prefix="val")
    writer.close()
    seen = {}
    for event_file in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                seen[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert seen == {("train/loss", 3): 0.25, ("val/loss", 5): 0.5}


class FakeRun:
    def __init__(self, calls, **kwargs):
        self.calls = calls
        calls.append(("init", kwargs))

    def log(self, values, step):
        self.calls.append(("log", values, step))

    def finish(self):
        self.calls.append(("finish",))


def test_wandb_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbWriter("octo")


def test_make_writers_with_wandb_keeps_the_run_id_for_resume(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: FakeRun(calls, **kwargs)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    workdir = tmp_path / "run"
    writer = make_writers(
        str(workdir), tensorboard=True, wandb_project="octo", is_main_process=True
    )
    assert isinstance(writer, MultiWriter) and isinstance(writer, MetricWriter)
    writer.write(2, {"loss": 1.5})
    writer.close()
    assert calls[1] == ("log", {"train/loss": 1.5}, 2) and calls[2] == ("finish",)
    assert read_jsonl(str(workdir / "metrics.jsonl"))[0]["loss"] == 1.5
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    make_writers(str(workdir), tensorboard=False, wandb_project="octo", is_main_process=True,
                 resume_step=2).close()  # fmt: skip
    first, again = calls[0][1], calls[3][1]
    assert first["id"] == again["id"] and again["resume"] == "allow" and first["name"] == "run"
    assert len(read_jsonl(str(workdir / "metrics.jsonl"))) == 1  # resumed: kept


def test_non_main_processes_write_nothing(tmp_path):
    writer = make_writers(str(tmp_path), tensorboard=True, wandb_project="x", is_main_process=False)
    assert isinstance(writer, NullWriter)
    writer.write(1, {"loss": 1.0})
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_progress_survives_zero_and_odd_values():
    out = io.StringIO()
    progress = Progress(10, initial_step=2, file=out, mininterval=0, plain=False)  # the bar
    progress.update(2)  # nothing happened yet
    progress.update(3, samples=0, data_wait_s=0.0, step_s=0.0, loss=None)
    progress.update(5, samples=64, data_wait_s=0.25, step_s=0.75, loss=jnp.float32(0.5))
    progress.update(4, samples=-1, data_wait_s=-1.0, step_s=float("nan"), loss=float("inf"))
    progress.update(50, samples=32, data_wait_s=1.0, step_s=0.0, loss=1e-9)  # past the total
    progress.close()
    text = out.getvalue()
    assert "data_wait=-%" in text and "loss=-" in text  # nothing measured yet, no loss
    assert "data_wait=25%" in text and "loss=0.5" in text and "samples/s=" in text
    assert "step/s" in text and "10/10" in text
    out = io.StringIO()
    waiting = Progress(5, file=out, mininterval=0, plain=False)
    waiting.update(1, samples=8, data_wait_s=1.0, step_s=0.0, loss=2.0)
    waiting.close()
    assert "data_wait=100%" in out.getvalue()
    Progress(0, file=io.StringIO()).update(0)
    Progress(5, disable=True).update(3, 8, 0.1, 0.1, 1.0)


def write_synthetic_metrics(path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for step in range(1, 201):
        loss = 2.0 * math.exp(-step / 50) + 0.05 * rng.random()
        lines.append({"step": step, "split": "train", "time": 0.0, "loss": loss, "mse": loss / 2,
                      "lr": 1e-3, "grad_norm": 1.0})  # fmt: skip
        if step % 50 == 0:
            lines.append({"step": step, "split": "val", "time": 0.0, "loss": loss + 0.1,
                          "mse": loss / 2 + 0.05})  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_plot_metrics_writes_a_png(tmp_path, capsys):
    write_synthetic_metrics(tmp_path / "metrics.jsonl")
    out = tmp_path / "plots" / "curves.png"
    metrics = plot_metrics.main([str(tmp_path), "--out", str(out)])
    assert metrics == ["loss", "mse"]  # losses, then metrics both splits log
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from PIL import Image

    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[1] > 500 and image.std() > 5  # drawn curves, not a blank canvas
    assert "wrote" in capsys.readouterr().out
    assert plot_metrics.main([str(tmp_path), "--out", str(out), "--metrics", "lr", "--logy"]) == [
        "lr"
    ]


def test_plot_metrics_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no metrics file"):
        plot_metrics.main([str(tmp_path), "--out", str(tmp_path / "x.png")])
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit, match="holds no numeric metrics"):
        plot_metrics.main([str(tmp_path), "--out", str(tmp_path / "x.png")])
    write_synthetic_metrics(tmp_path / "metrics.jsonl")
    with pytest.raises(SystemExit, match="unknown metrics"):
        plot_metrics.main([str(tmp_path), "--out", str(tmp_path / "x.png"), "--metrics", "acc"])


def test_dataset_shares_are_per_window_fractions():
    shares = metrics.DatasetShares()
    assert shares.take() == {}
    shares.count(np.array([b"bridge", b"bridge", b"kuka", b"bridge"], dtype=object))
    shares.count(["kuka"])
    assert shares.take() == {"data/share/bridge": 0.6, "data/share/kuka": 0.4}
    assert shares.take() == {}  # the window was reset

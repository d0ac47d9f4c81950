"""End to end: train.main for 2 steps, resume to 4; SIGKILL mid-run and resume bit-exactly;
a sharded run on a (2, 4) mesh; workdir identity."""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from flax import nnx

import train
from configs import pretrain
from octo_like.model.checkpoint_layout import finished_steps
from octo_like.model.octo_model import OctoModel
from octo_like.training.run.metrics import read_jsonl
from tests import xla_cache
from tests.xla_flags import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> str:
    """One synthetic dataset (and tokenizer) for every run of this module."""
    return str(tmp_path_factory.mktemp("synthetic"))


def debug_config(data_dir: str, stats_dir: str, *, validate: bool = False, **overrides):
    """The README's debug command (`python train.py --config configs/pretrain.py:debug ...`),
    parsed as the command line would be, with test-local data and overrides.

    Without `validate` the run has no held-out evaluation (``val_split=""``): building its
    pipeline and compiling its step took ~20 s of every short run; the runs that test it ask.
    """
    config, _, _, _ = train.parse_command_line(
        ["train.py", "--config", f"{REPO / 'configs/pretrain.py'}:debug"]
    )
    config.data_dir = data_dir
    config.data.statistics_cache_dir = stats_dir
    config.tensorboard = False
    config.compilation_cache = xla_cache.directory()  # the session's: compiled once
    if not validate:
        config.val_split = ""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def startup_phases(records) -> dict[str, float]:
    """The phases of the run's one 'time to first step' line, its total under 'total', the
    first step's own run under 'first step ran' and each phase said alongside under
    'alongside: <phase>'."""
    lines = [r.getMessage() for r in records if r.getMessage().startswith("time to first step")]
    assert len(lines) == 1, lines
    head, _, rest = lines[0].partition(": ")
    rest, _, ran = rest.partition("; the first step ran ")
    parts, _, alongside = rest.partition(" [alongside: ")
    parse = lambda text: {p.rsplit(" ", 2)[0]: float(p.rsplit(" ", 2)[1]) for p in text.split(", ")}
    found = {**parse(parts), "total": float(head.split()[-2]), "first step ran": float(ran[:-2])}
    if alongside:
        found.update({f"alongside: {k}": v for k, v in parse(alongside.rstrip("]")).items()})
    return found


@pytest.mark.slow
def test_train_two_steps_then_resume_to_four(shared_data, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    config = debug_config(
        shared_data, str(tmp_path / "stats"), validate=True, tensorboard=True,
        eval_action_samples=2,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="octo_like.training.run.loop")
    first = train.main(config, workdir, stop_at_step=2)
    assert (first.start_step, first.final_step) == (0, 2)
    assert np.isfinite(first.last_metrics["loss"])
    fresh = startup_phases(caplog.records)  # said once, at the first step, by phase
    phases = ("setup", "statistics", "pipeline build", "first batch", "model init")
    extra = ("total", "first step ran", "alongside: pipeline build", "alongside: step compile")
    assert set(fresh) == {*phases, "other", "step compile", *extra}
    in_total = [k for k in fresh if k not in extra]  # the step's run and the overlap are not
    assert abs(sum(fresh[k] for k in in_total) - fresh["total"]) < 0.5
    assert fresh["model init"] > 0 and fresh["first step ran"] > 0
    # The pipeline was traced beside the model (its own time > the wait it caused), and the
    # batch foreseen from the config and statistics was the pipeline's: compiled once.
    assert fresh["alongside: pipeline build"] > fresh["pipeline build"]
    assert not [r for r in caplog.records if "batch foreseen" in r.getMessage()]
    # Octo's sampled-action metrics beside the validation loss (training/run/action_metrics.py),
    # read through the project's reader; off on resume (a runtime key): the loss alone.
    (val,) = [
        e for e in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if e.get("split") == "val"
    ]
    for name in ("loss", "sampled_mse", "xyz_angle", "xyz_accuracy"):
        assert name in val and math.isfinite(val[name]), (name, val)
    assert 0.0 <= val["xyz_angle"] <= math.pi and 0.0 <= val["xyz_accuracy"] <= 1.0
    assert 0.0 <= val.get("gripping_accuracy", 0.0) <= 1.0  # needs a gripper change held out
    caplog.clear()
    config.eval_action_samples = 0
    second = train.main(config, workdir)
    assert (second.start_step, second.final_step) == (2, 4)
    last = [
        e for e in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if e.get("split") == "val"
    ]
    assert math.isfinite(last[-1]["loss"]) and "sampled_mse" not in last[-1]
    assert "checkpoint restore" in startup_phases(caplog.records)  # a resumed run restores
    steps = [
        e["step"]
        for e in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        if e.get("split", "train") == "train"
    ]
    assert steps == [1, 2, 3, 4]
    assert any(e.get("split") == "val" for e in read_jsonl(os.path.join(workdir, "metrics.jsonl")))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    model = OctoModel.load_pretrained(os.path.join(workdir, "checkpoints"))
    assert set(model.dataset_statistics) == {"synthetic_bridge"}
    observation = {
        "image_primary": np.zeros((1, 2, 64, 64, 3), np.uint8),
        "image_wrist": np.zeros((1, 2, 32, 32, 3), np.uint8),
        "timestep_pad_mask": np.ones((1, 2), bool),
        "pad_mask_dict": {"image_primary": np.ones((1, 2), bool),
                          "image_wrist": np.ones((1, 2), bool)},
    }  # fmt: skip
    tasks = model.create_tasks(texts=["open the drawer"])
    statistics = model.dataset_statistics["synthetic_bridge"]["action"]  # Octo's form
    actions = model.sample_actions(observation, tasks, statistics, rng=jax.random.key(0))
    assert actions.shape == (1, 4, 7) and np.isfinite(actions).all()


def test_a_wrongly_foreseen_batch_is_compiled_again_for_the_pipelines(
    shared_data, tmp_path, caplog, monkeypatch
):
    """Were the batch foreseen from the config and statistics ever not the pipeline's, the run
    says where they differ and builds and compiles for the pipeline's batch: it trains."""
    from octo_like.training.run import run_data

    foresee = run_data.foreseen_batch

    def wider_proprio(config, action_widths, proprio_widths):
        batch = foresee(config, action_widths, proprio_widths)
        proprio = batch["observation"]["proprio"]
        wrong = jax.ShapeDtypeStruct((*proprio.shape[:-1], proprio.shape[-1] + 1), proprio.dtype)
        return {**batch, "observation": {**batch["observation"], "proprio": wrong}}

    monkeypatch.setattr(run_data, "foreseen_batch", wider_proprio)
    caplog.set_level(logging.INFO, logger="octo_like.training.run.loop")
    config = debug_config(shared_data, str(tmp_path / "stats"))
    result = train.main(config, str(tmp_path / "run"), stop_at_step=1)
    assert result.final_step == 1 and np.isfinite(result.last_metrics["loss"])
    warnings = [r.getMessage() for r in caplog.records if "batch foreseen" in r.getMessage()]
    assert len(warnings) == 1 and "observation/proprio" in warnings[0], warnings


@pytest.mark.slow
def test_workdir_with_another_config_is_refused_unless_overwrite(shared_data, tmp_path):
    workdir = str(tmp_path / "run")
    stats = str(tmp_path / "stats")
    train.main(debug_config(shared_data, stats), workdir, stop_at_step=1)
    other = debug_config(shared_data, stats, **{"optimizer.learning_rate": 1e-3})
    with pytest.raises(ValueError, match="optimizer.learning_rate"):
        train.main(other, workdir, stop_at_step=1)
    result = train.main(other, workdir, overwrite=True, stop_at_step=1)
    assert result.start_step == 0
    assert any(p.name.startswith("run.overwritten") for p in tmp_path.iterdir())


def test_a_run_that_fails_validation_claims_no_workdir(shared_data, tmp_path):
    """Issue 13, item 6: a batch that does not split over the 8 devices fails before any data
    is read (no data dir is needed to see it) and leaves no config.json; the corrected command
    then starts a new run without --overwrite."""
    workdir = tmp_path / "run"
    stats = str(tmp_path / "stats")
    bad = debug_config(str(tmp_path / "no_data_here"), stats, **{"data.batch_size": 6})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"data.batch_size=6 is not divisible by the 8 batch"):
        train.main(bad, str(workdir), stop_at_step=1)
    assert time.perf_counter() - start < 30
    assert not (workdir / "config.json").exists()
    assert not (tmp_path / "no_data_here").exists()  # nothing was generated or read
    # A config that fails later, in the model (after the data were read): still unclaimed.
    broken = debug_config(
        shared_data, stats, **{"model.head.kind": "flow", "model.head.kwargs": {"no_such_kwarg": 1}}
    )
    filters = list(logging.getLogger("absl").filters)
    with pytest.raises(TypeError, match="no_such_kwarg") as error:
        train.main(broken, str(workdir), stop_at_step=1)
    # At model init: building the module (from its shapes first, to compile the step early).
    assert any(entry.name in ("from_config", "abstract_module") for entry in error.traceback)
    assert not (workdir / "config.json").exists()
    # The checkpointer opened before the failure is closed: its orbax notice filter is gone
    # from the process-wide absl logger (it silenced later loads' tests and users' own logs).
    assert logging.getLogger("absl").filters == filters
    result = train.main(debug_config(shared_data, stats), str(workdir), stop_at_step=1)
    assert result.start_step == 0 and (workdir / "config.json").exists()


def test_a_run_that_fails_just_before_its_loop_releases_what_it_opened(
    shared_data, tmp_path, monkeypatch
):
    """What a run opens before its loop (the checkpointer with its absl logging filter, the
    metrics writers, the progress bar, the prefetcher's thread) is released when its start-up
    fails after opening them: here the last thing before the loop fails."""
    from octo_like.training.run import loop, metrics

    filters = list(logging.getLogger("absl").filters)
    writers = []
    make_writers = metrics.make_writers
    monkeypatch.setattr(
        metrics, "make_writers", lambda *a, **k: writers.append(make_writers(*a, **k)) or writers[0]
    )

    def fail(start_step: int):
        raise RuntimeError("failed just before the loop")

    monkeypatch.setattr(loop, "PreemptionWatch", fail)
    config = debug_config(shared_data, str(tmp_path / "stats"))
    with pytest.raises(RuntimeError, match="just before the loop") as error:
        train.main(config, str(tmp_path / "run"), stop_at_step=1)
    assert logging.getLogger("absl").filters == filters, error.traceback[-1]
    assert [w._closed for w in writers[0].writers if hasattr(w, "_closed")] == [True]
    prefetching = [t for t in threading.enumerate() if t.name == "device-prefetch"]
    assert not prefetching, prefetching


@pytest.mark.slow
def test_sharded_training_on_a_2x4_mesh(shared_data, tmp_path):
    config = debug_config(
        shared_data,
        str(tmp_path / "stats"),
        **{"mesh.data": 2, "mesh.fsdp": 4, "mesh.fsdp_min_size_mb": 0.01},
    )
    result = train.main(config, str(tmp_path / "run"), stop_at_step=1)
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(result.state.params)]
    assert any("fsdp" in str(spec) for spec in specs), specs
    big = max(jax.tree.leaves(result.state.params), key=lambda x: x.size)
    assert len({str(s.index) for s in big.addressable_shards}) == 4  # 4 fsdp slices, 2 copies
    assert np.isfinite(result.last_metrics["loss"])


def _complete_steps(checkpoints: str) -> list[int]:
    """Finished steps, none before the run made its checkpoint directory."""
    return finished_steps(checkpoints) if os.path.isdir(checkpoints) else []


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_restores_it_bit_for_bit(shared_data, tmp_path):
    workdir = tmp_path / "run"
    stats = str(tmp_path / "stats")
    overrides = {"num_steps": 1000, "checkpoint.save_every": 2, "log_every": 1}
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags()}
    command = [
        sys.executable, str(REPO / "train.py"),
        "--config", f"{REPO / 'configs/pretrain.py'}:debug",
        "--workdir", str(workdir),
        f"--config.data_dir={shared_data}",
        f"--config.data.statistics_cache_dir={stats}",
        "--config.tensorboard=False", "--config.val_split=",  # as debug_config
    ] + [f"--config.{k}={v}" for k, v in overrides.items()]  # fmt: skip
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoints = str(workdir / "checkpoints")
    try:
        deadline = time.monotonic() + 300
        while not _complete_steps(checkpoints) and time.monotonic() < deadline:
            assert child.poll() is None, "training exited before its first checkpoint"
            time.sleep(0.2)
        assert _complete_steps(checkpoints), "no checkpoint within 300 s"
    finally:
        child.send_signal(signal.SIGKILL)  # JAX ignores SIGTERM
        child.wait(timeout=30)
    saved = _complete_steps(checkpoints)
    latest = saved[-1]
    assert latest % 2 == 0
    config = debug_config(shared_data, stats, **overrides)
    resumed = train.main(config, str(workdir), stop_at_step=latest)  # restore, train no step
    assert resumed.start_step == latest == resumed.final_step
    reference = OctoModel.load_pretrained(checkpoints, step=latest)
    expected = nnx.state(reference.module, nnx.Param).to_pure_dict()
    restored = jax.device_get(resumed.state.params.to_pure_dict())
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((workdir / "config.json").read_text())["num_steps"] == 1000


def test_a_frozen_language_encoder_is_frozen_in_the_optimizer(tmp_path):
    from octo_like.training.config import parse_train_config
    from octo_like.training.run.train_program import FROZEN_LANGUAGE_ENCODER, optimizer_config

    config = pretrain.get_config("debug")
    config.model.language.encoder = "t5"
    config.model.language.checkpoint_dir = str(tmp_path)
    config.model.language.frozen = True
    assert FROZEN_LANGUAGE_ENCODER in optimizer_config(parse_train_config(config, "w")).frozen
    config.model.language.frozen = False
    assert FROZEN_LANGUAGE_ENCODER not in optimizer_config(parse_train_config(config, "w")).frozen


def test_a_misspelled_config_key_fails_with_the_closest_name(tmp_path):
    from octo_like.config.typed import ConfigError
    from octo_like.training.config import parse_train_config

    config = pretrain.get_config("debug").to_dict()
    config["optimizer"]["learning_rte"] = 1e-3
    with pytest.raises(ConfigError, match="learning_rte.*did you mean 'learning_rate'"):
        parse_train_config(config, str(tmp_path))
    with pytest.raises(AttributeError):
        pretrain.get_config("debug").optimizer.learning_rte = 1.0  # locked ConfigDict


def test_actions_wider_than_the_model_are_named_before_the_pipeline(shared_data, tmp_path):
    """Issue 69 item 5: ``--config.model.action_dim=3`` on 7-dim data failed in the loss,
    naming neither the key nor the dataset."""
    from octo_like.config.typed import ConfigError

    narrow = debug_config(shared_data, str(tmp_path / "stats"), **{"model.action_dim": 3})
    with pytest.raises(ConfigError, match=r"'\w+' has 7-dim actions but model.action_dim is 3"):
        train.main(narrow, str(tmp_path / "run"), stop_at_step=1)
    assert not (tmp_path / "run" / "config.json").exists()

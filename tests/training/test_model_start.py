"""A fresh model's train step is compiled from the module's shapes beside its initialization
(octo_like/training/run/model_start.py): the program is the one its initialized weights compile
to, and a module holding arrays besides its weights waits for them."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import train
from octo_like.model import one_shot
from octo_like.model.octo_model import OctoModel
from octo_like.training.config import parse_train_config
from octo_like.training.parallel import sharding
from octo_like.training.run import model_start, run_data
from octo_like.training.run.abstract_inputs import abstract_batch
from octo_like.training.run.model_start import InitialModel, start_model

REPO = pathlib.Path(__file__).resolve().parents[2]


def debug_setup(tmp_path):
    config, _, _, _ = train.parse_command_line(
        [
            "train.py",
            "--config",
            f"{REPO / 'configs/pretrain.py'}:debug",
            f"--config.data_dir={tmp_path}",
        ]  # fmt: skip
    )
    config = parse_train_config(config, str(tmp_path / "run"))
    run_data.prepare_synthetic_data(config)  # its tokenizer
    mesh = sharding.make_mesh(config.mesh)
    init_rng, step_rng = jax.random.split(jax.random.key(0))
    layout = lambda abstract: sharding.parameter_shardings(abstract, mesh, config.mesh)

    def make_initial(example):
        return InitialModel(
            OctoModel.from_config(config.model, example, init_rng, {}, sharding=layout)
        )

    return config, mesh, make_initial, step_rng


def a_batch(example: dict, sharding) -> dict:
    """Values for the foreseen batch: normal floats, zero integers, true masks."""
    rng = np.random.default_rng(0)

    def value(spec):
        if np.issubdtype(spec.dtype, np.floating):
            return rng.normal(size=spec.shape).astype(spec.dtype)
        fill = np.ones if spec.dtype == bool else np.zeros
        return fill(spec.shape, spec.dtype)

    return jax.device_put(jax.tree.map(value, example), sharding)


def program_text(compiled) -> str:
    """The optimized HLO without its source locations (where each was traced from differs)."""
    text = compiled.as_text().split("\nFileNames\n")[0]
    return re.sub(r", metadata=\{[^}]*\}", "", text)


def test_a_step_compiled_from_shapes_is_the_one_the_initialized_weights_compile_to(tmp_path):
    config, mesh, make_initial, step_rng = debug_setup(tmp_path)
    example = abstract_batch(config)
    started = start_model(config, example, mesh, make_initial, step_rng, fresh=True)
    assert started.early
    early_step, compile_s = started.compiled.result()
    assert compile_s > 0
    program = started.program
    batch = a_batch(example, program.batch_sharding)
    late_step = program.train_step.lower(program.state, batch).compile()
    assert program_text(early_step) == program_text(late_step)
    copy = lambda: jax.tree.map(jnp.copy, program.state)  # each step donates its state
    early_state, early_metrics = early_step(copy(), batch)
    late_state, late_metrics = late_step(copy(), batch)
    for a, b in zip(jax.tree.leaves((early_state, early_metrics)),
                    jax.tree.leaves((late_state, late_metrics)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(early_metrics["loss"])


def test_a_compile_started_early_is_used_for_its_own_batch_only(tmp_path):
    """`start_model` takes the step compiled while the statistics were computed when it is for
    the batch it is given and for a fresh model; otherwise it compiles anew."""
    config, mesh, make_initial, step_rng = debug_setup(tmp_path)
    example = abstract_batch(config)
    early = model_start.compile_from_shapes(config, example, mesh, step_rng)
    started = start_model(config, example, mesh, make_initial, step_rng, fresh=True, early=early)
    assert started.early and started.compiled is early.compiled
    proprio = example["observation"]["proprio"].shape[-1]
    wider = model_start.EarlyStep(abstract_batch(config, proprio_dim=proprio + 1), early.compiled)
    started = start_model(config, example, mesh, make_initial, step_rng, fresh=True, early=wider)
    assert started.early and started.compiled is not early.compiled
    hooked = start_model(config, example, mesh, make_initial, step_rng, fresh=False, early=early)
    assert not hooked.early and hooked.compiled is not early.compiled
    step, _ = started.compiled.result()
    _, metrics = step(started.program.state, a_batch(example, started.program.batch_sharding))
    assert np.isfinite(metrics["loss"])


def test_a_module_holding_other_arrays_than_weights_compiles_after_its_initialization(
    tmp_path, monkeypatch
):
    """Such arrays (batch statistics, say) are compiled into the step as values, which the
    shapes do not have."""
    config, mesh, make_initial, step_rng = debug_setup(tmp_path)
    shapes_only = OctoModel.abstract_module

    def with_batch_statistics(model_config, example):
        module = shapes_only(model_config, example)
        module.running_mean = nnx.BatchStat(jax.ShapeDtypeStruct((4,), jnp.float32))
        return module

    monkeypatch.setattr(model_start.OctoModel, "abstract_module", with_batch_statistics)
    example = abstract_batch(config)
    started = start_model(config, example, mesh, make_initial, step_rng, fresh=True)
    assert not started.early
    step, _ = started.compiled.result()
    batch = a_batch(example, started.program.batch_sharding)
    _, metrics = step(started.program.state, batch)
    assert np.isfinite(metrics["loss"])


def test_the_programs_a_start_runs_once_are_compiled_for_one_run(tmp_path, monkeypatch):
    """The initializers and the first optimizer state go through `one_shot.run_once`."""
    asked = []
    options = one_shot.one_shot_options
    monkeypatch.setattr(one_shot, "one_shot_options", lambda: asked.append(1) or options())
    config, mesh, make_initial, step_rng = debug_setup(tmp_path)
    started = start_model(config, abstract_batch(config), mesh, make_initial, step_rng, fresh=True)
    assert len(asked) == 2  # the initializers, then the train state's optimizer state
    assert int(started.program.state.step) == 0

"""The exponential moving average of the weights: its recurrence, what evaluation reads, and a
real run that saves the average as the model and resumes it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import train
from octo_like.model.octo_model import OctoModel
from octo_like.training.optim.optimizer import OptimizerConfig
from octo_like.training.run.step import TrainState, ema_decay_at, inference_params, make_steps
from tests.training.test_train import debug_config

TARGET = np.array([3.0, -1.0], np.float32)


class Quadratic(nnx.Module):
    """loss = |w - target|^2, so plain SGD moves w by a known amount each step."""

    def __init__(self):
        self.w = nnx.Param(jnp.array([1.0, -2.0], jnp.float32))

    def loss(self, batch, rng, train):
        del rng, train
        loss = jnp.sum((self.w.get_value() - batch["target"]) ** 2)
        return loss, {}


def quadratic_steps(ema_decay):
    graphdef, params, rest = nnx.split(Quadratic(), nnx.Param, ...)
    optimizer = optax.sgd(0.1)
    ema = jax.tree.map(jnp.copy, params) if ema_decay is not None else None
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ema)
    train_step, eval_step = make_steps(
        graphdef, rest, optimizer, lambda s: 0.1, jax.random.key(0), ema_decay=ema_decay
    )
    return state, jax.jit(train_step), jax.jit(eval_step)


def test_the_average_follows_its_recurrence_and_evaluation_reads_it():
    decay, batch = 0.9, {"target": TARGET}
    state, train_step, eval_step = quadratic_steps(decay)
    w = np.array([1.0, -2.0])
    average = w.copy()
    for t in range(10):
        w = w - 0.1 * 2.0 * (w - TARGET)  # SGD on |w - target|^2
        weight = min(decay, (1.0 + t) / (10.0 + t))
        average = weight * average + (1.0 - weight) * w
        state, _ = train_step(state, batch)
        np.testing.assert_allclose(state.params["w"].get_value(), w, rtol=1e-5)
        np.testing.assert_allclose(state.ema_params["w"].get_value(), average, rtol=1e-5)
    # The average lags the trained weights, and evaluation reads the average.
    assert np.abs(average - w).max() > 1e-3
    assert inference_params(state) is state.ema_params
    expected = float(np.sum((average - TARGET) ** 2))
    np.testing.assert_allclose(float(eval_step(state, batch)["loss"]), expected, rtol=1e-5)


def test_the_first_steps_forget_the_initialization_and_later_ones_use_the_decay():
    weights = [float(ema_decay_at(t, 0.999)) for t in (0, 1, 10, 10_000)]
    assert weights[0] == pytest.approx(0.1) and weights[1] == pytest.approx(2 / 11)
    assert weights[2] == pytest.approx(11 / 20) and weights[3] == pytest.approx(0.999)


def test_without_an_average_the_state_carries_none_and_evaluation_reads_the_weights():
    state, train_step, eval_step = quadratic_steps(None)
    state, _ = train_step(state, {"target": TARGET})
    assert state.ema_params is None and inference_params(state) is state.params


def test_an_average_needs_its_weights_in_the_state():
    state, _, _ = quadratic_steps(None)
    _, train_step, _ = quadratic_steps(0.9)
    with pytest.raises(ValueError, match="no ema_params"):
        train_step(state, {"target": TARGET})


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1])
def test_an_out_of_range_decay_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        OptimizerConfig(ema_decay=decay)


@pytest.mark.slow
def test_a_run_saves_the_average_as_its_model_and_resumes_it(tmp_path):
    """train.py with optimizer.ema_decay: the checkpoint's model is the average (not the
    trained weights), and a resume restores the average bit for bit."""
    overrides = {"optimizer.ema_decay": 0.5, "val_split": ""}  # the unit test covers eval
    config = debug_config(str(tmp_path / "data"), str(tmp_path / "stats"), **overrides)
    workdir = str(tmp_path / "run")
    first = train.main(config, workdir, stop_at_step=2)
    again = train.main(config, workdir, stop_at_step=2)  # restores step 2, trains nothing
    assert (again.start_step, again.final_step) == (2, 2)

    def host(tree):
        return jax.tree.leaves(jax.device_get(tree))

    average, trained = host(first.state.ema_params), host(first.state.params)
    for restored, saved in zip(host(again.state.ema_params), average, strict=True):
        np.testing.assert_array_equal(restored, saved)
    loaded = OctoModel.load_pretrained(f"{workdir}/checkpoints")
    for model_weight, saved in zip(host(nnx.state(loaded.module, nnx.Param)), average, strict=True):
        np.testing.assert_array_equal(model_weight, saved)
    assert any(np.abs(a - t).max() > 0 for a, t in zip(average, trained, strict=True))

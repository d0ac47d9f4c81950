"""A trainable T5 (`model.language.frozen=False`) trains inside the jitted train step, dropout
on: its dropout draws from the step's key (fold_in(base, step)), so nothing in the module is
mutated under the trace (which failed with "Cannot mutate RngCount from a different trace
level") and a resumed run draws the same masks. The small encoder (the debug and laptop
presets' trainable one) draws its dropout the same way, and `train.main` trains a trainable T5
end to end."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import train
from octo_like.model.config import LanguageConfig
from octo_like.model.language import SmallTextEncoder, load_t5_encoder
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.training.optim.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
from octo_like.training.run.step import TrainState, make_steps
from tests.inference import conftest as tiny
from tests.training.test_train import debug_config


def _setup(tmp_path):
    t5 = write_tiny_t5_checkpoint(str(tmp_path / "t5"))  # dropout_rate 0.1, HF's default
    config = tiny.tiny_config(t5)
    config = dataclasses.replace(
        config, language=LanguageConfig(encoder="t5", checkpoint_dir=t5, frozen=False)
    )
    model = tiny.host_initialized_model(config)
    batch = tiny.example_batch(batch=2)
    task = tokenize_tasks(batch["task"], model.text_tokenizer)
    task.pop("language_instruction")
    rng = np.random.default_rng(0)
    batch = {
        **batch,
        "task": task,
        "action": rng.normal(size=(2, tiny.WINDOW, tiny.HORIZON, tiny.MODEL_A)).astype(np.float32),
        "action_pad_mask": np.ones((2, tiny.WINDOW, tiny.HORIZON, tiny.MODEL_A), bool),
    }
    batch["observation"] = {
        **batch["observation"],
        "image_primary": rng.integers(0, 255, batch["observation"]["image_primary"].shape,
                                      dtype=np.uint8),
    }  # fmt: skip
    graphdef, params, rest = nnx.split(model.module, nnx.Param, ...)
    opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=1)
    optimizer, counts = make_optimizer(opt, params, 10)
    train_step, eval_step = make_steps(
        graphdef, rest, optimizer, loop_learning_rate(opt, 10), jax.random.key(7)
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    return model, batch, jax.jit(train_step), jax.jit(eval_step), state, counts


def _t5(params) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(params["language_encoder"])]


def test_a_trainable_t5_trains_with_dropout_in_the_jitted_step(tmp_path):
    model, batch, train_step, eval_step, state, counts = _setup(tmp_path)
    assert model.config.language.frozen is False
    assert counts["frozen_parameters"] == 0  # nothing frozen, T5 included
    before = _t5(state.params)
    first, metrics = train_step(state, batch)
    second, metrics_2 = train_step(first, batch)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics_2["loss"]))
    after = _t5(second.params)
    changed = [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed), f"{sum(changed)} of {len(changed)} T5 arrays moved"
    # The same step (same key) draws the same dropout masks: a resumed run repeats it.
    again, metrics_again = train_step(state, batch)
    assert float(metrics_again["loss"]) == float(metrics["loss"])
    # Evaluation is deterministic; training with dropout is not, across steps' keys.
    assert float(eval_step(state, batch)["loss"]) == float(eval_step(state, batch)["loss"])
    shifted = state.replace(step=state.step + 5)
    assert float(train_step(shifted, batch)[1]["loss"]) != float(metrics["loss"])


def test_dropout_is_active_in_the_trainable_encoder(tmp_path):
    model = _setup(tmp_path)[0]
    tokens = model.text_tokenizer(["push the block left", "open the drawer"])
    encoder = model.module.language_encoder
    clean = encoder(tokens["tokens"], tokens["mask"])
    dropped = encoder(tokens["tokens"], tokens["mask"], train=True, rng=jax.random.key(0))
    assert not np.allclose(np.asarray(clean), np.asarray(dropped))


def test_no_module_holds_rng_state(tmp_path):
    """Every dropout key comes from the call (the step's key): nothing in the model is an RNG
    stream that a jitted step could advance, so the closed-over rest of the module is
    constant and a resumed run cannot draw differently."""
    model = _setup(tmp_path)[0]
    assert model.module.language_encoder.config.dropout_rate > 0
    assert not jax.tree.leaves(nnx.state(model.module, nnx.RngState))
    small = SmallTextEncoder(64, width=16, depth=1, num_heads=2, dropout_rate=0.5,
                             rngs=nnx.Rngs(0))  # fmt: skip
    assert not jax.tree.leaves(nnx.state(small, nnx.RngState))


def test_the_small_encoders_dropout_draws_from_the_given_key():
    """Inside jit and grad, as in the train step: the same key gives the same loss and
    gradients, another key other ones, evaluation none; training without a key is refused."""
    encoder = SmallTextEncoder(64, width=16, depth=2, num_heads=2, max_length=8,
                               dropout_rate=0.3, rngs=nnx.Rngs(0))  # fmt: skip
    graphdef, params = nnx.split(encoder, nnx.Param)
    tokens = np.arange(2 * 8, dtype=np.int32).reshape(2, 8) % 60 + 2
    mask = np.ones((2, 8), bool)

    @functools.partial(jax.jit, static_argnums=2)
    def step(params, rng, train):
        def loss(params):
            out = nnx.merge(graphdef, params)(tokens, mask, train=train, rng=rng)
            return jnp.mean(jnp.square(out.astype(jnp.float32)))

        return jax.value_and_grad(loss)(params)

    train_step = lambda rng: step(params, rng, True)  # noqa: E731
    key, other = jax.random.key(1), jax.random.key(2)
    (loss, grads), (again, grads_again) = train_step(key), train_step(key)
    assert float(loss) == float(again) and np.isfinite(float(loss))
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(train_step(other)[0]) != float(loss)
    clean = float(step(params, key, False)[0])
    assert clean == float(step(params, other, False)[0]) != float(loss)
    with pytest.raises(ValueError, match="needs an `rng` key"):
        encoder(tokens, mask, train=True)


@pytest.mark.slow
def test_train_main_trains_a_trainable_t5(tmp_path):
    """The debug preset with ``--config.model.language.encoder=t5
    --config.model.language.frozen=False`` (a tiny T5, dropout 0.1) trains and evaluates."""
    t5 = write_tiny_t5_checkpoint(str(tmp_path / "t5"))
    overrides = {
        "model.language.encoder": "t5",
        "model.language.checkpoint_dir": t5,
        "model.language.frozen": False,
    }
    config = debug_config(str(tmp_path / "data"), str(tmp_path / "stats"), **overrides)
    result = train.main(config, str(tmp_path / "run"), stop_at_step=2)
    assert result.final_step == 2 and np.isfinite(result.last_metrics["loss"])
    loaded, _ = load_t5_encoder(t5)
    before = jax.tree.leaves(nnx.state(loaded, nnx.Param).to_pure_dict())
    after = jax.tree.leaves(jax.device_get(result.state.params["language_encoder"].to_pure_dict()))
    moved = [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(moved), f"{sum(moved)} of {len(moved)} T5 arrays moved"

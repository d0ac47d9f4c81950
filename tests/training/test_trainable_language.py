"""A trainable T5 (`model.language.frozen=False`) trains inside the jitted train step, dropout
on: its dropout draws from the step's key (fold_in(base, step)), so nothing in the module is
mutated under the trace (which failed with "Cannot mutate RngCount from a different trace
level") and a resumed run draws the same masks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from octo_like.model.config import LanguageConfig
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import tokenize_tasks
from octo_like.training.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
from octo_like.training.step import TrainState, make_steps
from tests.inference import conftest as tiny


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

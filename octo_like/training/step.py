"""The pure train and eval steps, jitted once with explicit shardings and a donated state.

The per-step RNG is ``fold_in(base_rng, state.step)``: no RNG lives in the state, so a resumed
run draws exactly the randomness the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """step int32[]; params: nnx.State of the model's Params; opt_state: the optax state."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


def make_steps(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    optimizer: optax.GradientTransformation,
    learning_rate: Callable[[jax.Array], jax.Array],
    base_rng: jax.Array,
    frozen: nnx.State | None = None,
):
    """(train_step, eval_step) as pure functions of (state, batch).

    `frozen`: optional bool tree of the params' structure (True = frozen). Frozen params are
    wrapped in `stop_gradient`, so XLA skips their weight gradients (a head-only fine-tuning
    then does no backward pass through a frozen transformer); their gradients read as 0.
    """

    def loss_fn(params, batch, rng, train):
        if frozen is not None:
            params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        module = nnx.merge(graphdef, params, rest)
        return module.loss(batch, rng=rng, train=train)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(base_rng, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, rng, True
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(params),
            "learning_rate": learning_rate(state.step),
        }
        return TrainState(state.step + 1, params, opt_state), metrics

    eval_rng = jax.random.fold_in(base_rng, 0x7FFFFFFF)  # a stream apart from training steps

    def eval_step(state: TrainState, batch: dict) -> dict:
        rng = jax.random.fold_in(eval_rng, state.step)
        loss, metrics = loss_fn(state.params, batch, rng, False)
        return {**metrics, "loss": loss}

    return train_step, eval_step

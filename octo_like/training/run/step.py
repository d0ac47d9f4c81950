"""The pure train and eval steps, jitted once with explicit shardings and a donated state.

The per-step RNG is ``fold_in(base_rng, state.step)``: no RNG lives in the state, so a resumed
run draws exactly the randomness the uninterrupted run would have drawn.

With an exponential moving average of the weights (`ema_decay`), the state carries
``ema_params`` beside the trained ``params``; evaluation, in-training rollouts and the saved
model read the average (`inference_params`), which smooths out the last steps' noise at no
compute cost beyond one multiply-add per weight.

Evaluation draws from its own stream, ``fold_in(base_rng, EVAL_STREAM)``, folded with the step
being evaluated; the sampled actions of `make_sample_step` fold in `SAMPLE_STREAM` and the
batch's index on top, so they never reuse the loss's draws or another batch's.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

# The average starts short and lengthens: decay_t = min(ema_decay, (1 + t) / (10 + t)), so the
# first steps' random initialization is forgotten at once instead of over 1 / (1 - decay) steps.
EMA_WARMUP_OFFSET = 10.0
EVAL_STREAM = 0x7FFFFFFF  # fold_in index of evaluation's randomness, apart from training steps
SAMPLE_STREAM = 1  # within one evaluation: the sampled actions', apart from the loss's


@flax.struct.dataclass
class TrainState:
    """step int32[]; params: nnx.State of the model's Params; opt_state: the optax state;
    ema_params: the weights' moving average (same tree as params), or None without EMA."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    ema_params: nnx.State | None = None


def inference_params(state: TrainState) -> nnx.State:
    """The weights a run evaluates and saves: the moving average when there is one."""
    return state.params if state.ema_params is None else state.ema_params


def ema_decay_at(step: jax.Array, ema_decay: float) -> jax.Array:
    """float32[]: the averaging weight of the old average at update `step` (0-based)."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + step) / (EMA_WARMUP_OFFSET + step))


def make_steps(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    optimizer: optax.GradientTransformation,
    learning_rate: Callable[[jax.Array], jax.Array],
    base_rng: jax.Array,
    frozen: nnx.State | None = None,
    ema_decay: float | None = None,
):
    """(train_step, eval_step) as pure functions of (state, batch).

    `frozen`: optional bool tree of the params' structure (True = frozen). Frozen params are
    wrapped in `stop_gradient`, so XLA skips their weight gradients (a head-only fine-tuning
    then does no backward pass through a frozen transformer); their gradients read as 0.
    `ema_decay`: when set, the state must carry `ema_params`; each step moves them towards the
    new params by ``1 - ema_decay_at(step)``. The eval step reads `inference_params`.
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
        ema_params = state.ema_params
        if ema_decay is not None:
            if ema_params is None:
                raise ValueError("ema_decay is set but the train state has no ema_params")
            decay = ema_decay_at(state.step, ema_decay)
            ema_params = jax.tree.map(
                lambda e, p: (e + (1.0 - decay) * (p - e)).astype(e.dtype), ema_params, params
            )
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(params),
            "learning_rate": learning_rate(state.step),
        }
        return TrainState(state.step + 1, params, opt_state, ema_params), metrics

    eval_rng = jax.random.fold_in(base_rng, EVAL_STREAM)

    def eval_step(state: TrainState, batch: dict) -> dict:
        rng = jax.random.fold_in(eval_rng, state.step)
        loss, metrics = loss_fn(inference_params(state), batch, rng, False)
        return {**metrics, "loss": loss}

    return train_step, eval_step


def make_sample_step(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    base_rng: jax.Array,
    samples: int,
    score: Callable[[jax.Array, jax.Array, jax.Array], dict],
):
    """sample_step(state, batch, index) -> `score`'s metrics, a pure function.

    Samples `samples` normalized action chunks per state with the model's own `predict_action`
    (float32[samples, b, H, A], the last window step's) from `inference_params`, and returns
    ``score(predicted, true float[b, H, A], mask bool[b, H, A])``: the batch's chunk and pad mask
    at the last window step. `index` (int32[]): the batch's place in the evaluation.
    """
    eval_rng = jax.random.fold_in(base_rng, EVAL_STREAM)

    def sample_step(state: TrainState, batch: dict, index: jax.Array) -> dict:
        rng = jax.random.fold_in(jax.random.fold_in(eval_rng, state.step), SAMPLE_STREAM)
        module = nnx.merge(graphdef, inference_params(state), rest)
        predicted = module.predict_action(
            batch["observation"],
            batch["task"],
            rng=jax.random.fold_in(rng, index),
            sample_shape=(samples,),
        )
        return score(predicted, batch["action"][:, -1], batch["action_pad_mask"][:, -1])

    return sample_step

"""The program a run compiles: the train state, its shardings and the jitted train/eval steps.

Built in one place for the training loop (real weights on real devices) and for the compile
check (abstract shapes on a TPU topology's compile-only devices, `compile_check.py`), so the
program a user checks before booking a pod slice is exactly the one that will train on it.
A run with validation also gets a jitted sample step: Octo's sampled-action metrics on held-out
batches (`action_metrics.py`), off with ``eval_action_samples=0``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.model.one_shot import run_once
from octo_like.normalization import NormalizationType, as_normalization_type
from octo_like.training.config import TrainConfig
from octo_like.training.optim import masks
from octo_like.training.optim.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
from octo_like.training.parallel import sharding
from octo_like.training.run import action_metrics
from octo_like.training.run.step import TrainState, make_sample_step, make_steps

log = logging.getLogger(__name__)

FROZEN_LANGUAGE_ENCODER = "^language_encoder/"


def optimizer_config(config: TrainConfig, extra_frozen: tuple[str, ...] = ()) -> OptimizerConfig:
    """The optimizer config, with a frozen language encoder's weights and `extra_frozen` (e.g.
    the reused weights of a head-only fine-tuning) frozen too."""
    frozen = (*config.optimizer.frozen, *extra_frozen)
    language = config.model.language
    if language.encoder != "none" and language.frozen:
        frozen = (*frozen, FROZEN_LANGUAGE_ENCODER)
    return dataclasses.replace(config.optimizer, frozen=frozen)


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """train_step: jitted (state, batch) -> (state, metrics), the state donated;
    eval_step: jitted (state, batch) -> metrics; state: the initial `TrainState`, placed with
    `state_shardings` (or, when built abstractly, `jax.ShapeDtypeStruct` leaves carrying them);
    parameter_counts: `make_optimizer`'s counts (total / trainable / frozen);
    sample_step: jitted (state, batch, index int32[]) -> {metric: (sum, count)} of the sampled
    actions (`step.make_sample_step`, `action_metrics.metric_sums`), or None (no validation,
    ``eval_action_samples=0`` or an abstract build)."""

    train_step: Any
    eval_step: Any
    state: TrainState
    state_shardings: TrainState
    batch_sharding: jax.sharding.NamedSharding
    parameter_counts: dict[str, int]
    optimizer_config: OptimizerConfig
    sample_step: Any = None


def build_program(
    config: TrainConfig,
    module: nnx.Module,
    mesh: jax.sharding.Mesh,
    step_rng: jax.Array,
    *,
    extra_frozen: tuple[str, ...] = (),
    abstract: bool = False,
) -> TrainProgram:
    """The train program of `module` (an `OctoModule`) under `config` on `mesh`.

    `abstract`: `module` comes from `nnx.eval_shape` and nothing is materialized: the state is
    `jax.eval_shape` of its initialization, with shardings attached, ready for
    ``program.train_step.lower(program.state, batch).compile()`` on any topology.
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    if abstract:
        rest = _materialize(rest)  # the non-parameter state (RNG streams) is closed over
    opt_config = optimizer_config(config, extra_frozen)
    optimizer, counts = make_optimizer(opt_config, params, config.num_steps)
    averaged = opt_config.ema_decay is not None

    def initial_state(params) -> TrainState:
        return TrainState(
            jnp.zeros((), jnp.int32),
            params,
            optimizer.init(params),
            ema_params=jax.tree.map(jnp.copy, params) if averaged else None,
        )

    abstract_state = jax.eval_shape(initial_state, params)
    param_shardings = sharding.parameter_shardings(params, mesh, config.mesh)
    state_shardings = TrainState(
        sharding.replicated(mesh),
        param_shardings,
        sharding.opt_state_shardings(abstract_state.opt_state, param_shardings, mesh),
        ema_params=param_shardings if averaged else None,
    )
    if abstract:
        state = jax.tree.map(
            lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
            abstract_state,
            state_shardings,
        )
    else:
        # One compiled program writes the optimizer state straight into its shardings (eagerly,
        # each moment buffer would be its own compiled op, then a copy); parameters made
        # elsewhere (a checkpoint, the default device) are first moved into theirs.
        params = jax.device_put(params, param_shardings)
        state = run_once(jax.jit(initial_state, out_shardings=state_shardings), params)
    train_step, eval_step = make_steps(
        graphdef,
        rest,
        optimizer,
        loop_learning_rate(config.optimizer, config.num_steps),
        step_rng,
        frozen=masks.regex_mask(params, opt_config.frozen, name="frozen"),
        ema_decay=opt_config.ema_decay,
    )
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    train_step = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        eval_step, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated
    )
    sample_step = None
    if config.val_split and config.eval_action_samples and not abstract:
        score = functools.partial(action_metrics.metric_sums, layout=sampled_metrics_layout(config))
        sample_step = jax.jit(
            make_sample_step(graphdef, rest, step_rng, config.eval_action_samples, score),
            in_shardings=(state_shardings, batch_sharding, replicated),
            out_shardings=replicated,
        )
    return TrainProgram(
        train_step, eval_step, state, state_shardings, batch_sharding, counts, opt_config,
        sample_step,
    )  # fmt: skip


def sampled_metrics_layout(config: TrainConfig) -> action_metrics.ActionLayout | None:
    """Octo's action layout when the run's actions fit it (7-dim ``eef_pos`` deltas with a raw
    gripper), else None (only `sampled_mse` is logged) with an INFO line saying why."""
    specs = [get_dataset_spec(d.name, config.data.extra_specs) for d in config.data.datasets]
    normalizes = as_normalization_type(config.data.normalization) is not NormalizationType.NONE
    problem = action_metrics.layout_problem(
        config.model.action_dim,
        {spec.name: spec.action_encoding.value for spec in specs},
        {
            spec.name: normalizes
            and (spec.action_normalization_mask is None or spec.action_normalization_mask[-1])
            for spec in specs
        },
    )
    if problem:
        log.info("validation: sampled_mse only (Octo's xyz and gripper metrics skipped: %s)",
                 problem)  # fmt: skip
        return None
    return action_metrics.ActionLayout()


def _materialize(tree: Any) -> Any:
    """Concrete arrays of zeros (keys from seed 0) for the abstract leaves of a small state."""

    def concrete(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            keys = jax.random.split(jax.random.key(0), max(1, math.prod(leaf.shape)))
            return keys.reshape(leaf.shape)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(concrete, tree)

"""Flow-matching head: a residual MLP predicts the velocity of a straight noise-to-data path.

Convention (see `octo_like.model.diffusion`): time ``s`` runs from noise (``s = 0``) to data
(``s = 1``), ``x_s = (1 - s) * noise + s * actions`` and the target velocity is
``actions - noise``. Training draws ``s ~ U[0, 1)`` per ``(b, w)`` element; sampling integrates
with ``flow_steps`` Euler steps in one `jax.lax.scan`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import diffusion
from octo_like.model.heads.base import (
    masked_mean,
    pool_readouts,
    valid_action_mask,
    zero_invalid,
)
from octo_like.model.heads.mlp import IterativeHead


class FlowMatchingActionHead(IterativeHead):
    """Rectified-flow velocity prediction conditioned on the mean readout embedding.

    Targets are clipped to ``[-max_action, max_action]``; so are sampled chunks.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        action_dim: int,
        action_horizon: int,
        rngs: nnx.Rngs,
        flow_steps: int = 10,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        dropout_rate: float = 0.0,  # Octo 1.5 turned it off (it fights the layer norm)
        time_dim: int = 32,
        max_action: float = 5.0,
        dtype: Any = None,
    ):
        super().__init__(
            embedding_dim=embedding_dim,
            action_dim=action_dim,
            action_horizon=action_horizon,
            rngs=rngs,
            steps=flow_steps,
            steps_name="flow_steps",
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            dropout_rate=dropout_rate,
            time_dim=time_dim,
            max_action=max_action,
            dtype=dtype,
        )
        self.flow_steps = flow_steps

    def loss(
        self,
        readouts: jax.Array,
        actions: jax.Array,
        timestep_pad_mask: jax.Array,
        action_pad_mask: jax.Array,
        *,
        rng: jax.Array,
        train: bool,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean squared velocity error over valid elements; metrics ``loss`` and ``mse``."""
        self.check_loss_inputs(readouts, actions, timestep_pad_mask, action_pad_mask)
        mask = valid_action_mask(timestep_pad_mask, action_pad_mask)
        b, w = actions.shape[:2]
        data = jnp.clip(zero_invalid(actions, mask), -self.max_action, self.max_action)
        data = data.reshape(b, w, self.chunk_size)
        s_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        s = jax.random.uniform(s_rng, (b, w))
        noise = jax.random.normal(noise_rng, data.shape, jnp.float32)
        x_s = diffusion.flow_interpolate(data, noise, s)
        velocity = self.network(x_s, pool_readouts(readouts), s, train=train, rng=dropout_rng)
        target = diffusion.flow_velocity_target(data, noise)
        error = jnp.square(velocity - target).reshape(actions.shape)
        loss = masked_mean(error, mask)
        return loss, {"loss": loss, "mse": loss}

    def predict_action(
        self,
        readouts: jax.Array,
        *,
        rng: jax.Array,
        sample_shape: tuple[int, ...] = (),
        train: bool = False,
    ) -> jax.Array:
        """``float32[*sample_shape, b, H, A]``: one Euler integration per sample."""
        condition = self.last_condition(readouts, sample_shape)
        init_rng, dropout_rng = jax.random.split(rng)
        x_init = jax.random.normal(init_rng, condition.shape[:-1] + (self.chunk_size,))

        def velocity_fn(x_s: jax.Array, s: jax.Array) -> jax.Array:
            step_rng = jax.random.fold_in(
                dropout_rng, jnp.round(s * self.flow_steps).astype(jnp.int32)
            )
            return self.network(x_s, condition, s, train=train, rng=step_rng)

        x1 = diffusion.euler_integrate(velocity_fn, x_init, self.flow_steps)
        x1 = jnp.clip(x1, -self.max_action, self.max_action)
        return x1.reshape(x1.shape[:-1] + (self.action_horizon, self.action_dim))

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

from octo_like.model import diffusion
from octo_like.model.heads.iterative import IterativeHead


class FlowMatchingActionHead(IterativeHead):
    """Rectified-flow velocity prediction conditioned on the mean readout embedding.

    Targets are clipped to ``[-max_action, max_action]``; so are sampled chunks.
    """

    def __init__(self, *, flow_steps: int = 10, **shared: Any):
        """``shared``: the sizes and network keywords of `IterativeHead` (hidden_dim, ...)."""
        super().__init__(steps=flow_steps, steps_name="flow_steps", **shared)
        self.flow_steps = flow_steps

    def draw_time(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """``s ~ U[0, 1)``."""
        return jax.random.uniform(rng, shape)

    def corrupt(
        self, clean: jax.Array, noise: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The point ``x_s`` of the straight path; the target is its velocity."""
        return (
            diffusion.flow_interpolate(clean, noise, t),
            diffusion.flow_velocity_target(clean, noise),
        )

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

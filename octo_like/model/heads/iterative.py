"""The base of the heads that turn noise into an action chunk (diffusion, flow matching).

Both train the same way: clip the actions to ``[-max_action, max_action]`` and flatten each
chunk to ``[H * A]``, draw a time and a noise vector per ``(b, w)`` element, corrupt the chunk
along the head's path, and regress the residual MLP's output on the path's target. The path is
each head's own (`IterativeHead.draw_time`, `IterativeHead.corrupt`, `IterativeHead.network_time`);
this module holds the rest once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model.heads.base import BaseActionHead
from octo_like.model.heads.mlp import ResidualMLPDenoiser


class IterativeHead(BaseActionHead):
    """A residual MLP over the flattened chunk ``[H * A]``, conditioned on the pooled readout
    and a time, run for `steps` denoising / integration steps; outputs are clipped to
    ``[-max_action, max_action]``. The loss is the squared error, term ``"mse"``."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        action_dim: int,
        action_horizon: int,
        rngs: nnx.Rngs,
        steps: int,
        steps_name: str,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        dropout_rate: float = 0.0,  # Octo 1.5 turned it off (it fights the layer norm)
        time_dim: int = 32,
        max_action: float = 5.0,
        dtype: Any = None,
        fourier_init_std: float | None = None,
        loss_scale: str = "mean",
    ):
        """The keywords every iterative head takes; `steps` (named `steps_name` in errors) and
        `fourier_init_std` are set by the subclass."""
        super().__init__(
            embedding_dim=embedding_dim,
            action_dim=action_dim,
            action_horizon=action_horizon,
            loss_scale=loss_scale,
        )
        if steps < 1:
            raise ValueError(f"{steps_name} must be >= 1, got {steps}")
        if max_action <= 0:
            raise ValueError(f"max_action must be > 0, got {max_action}")
        self.max_action = float(max_action)
        self.network = ResidualMLPDenoiser(
            in_dim=self.chunk_size,
            cond_dim=embedding_dim,
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            dropout_rate=dropout_rate,
            time_dim=time_dim,
            rngs=rngs,
            dtype=dtype,
            fourier_init_std=fourier_init_std,
        )

    @property
    def loss_term(self) -> str:
        return "mse"

    def draw_time(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """One training time per ``(b, w)`` element, in the head's own units."""
        raise NotImplementedError(f"{type(self).__name__} must define draw_time")

    def corrupt(
        self, clean: jax.Array, noise: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """``(network input, regression target)``, each ``float32[b, w, H*A]``, at times ``t``."""
        raise NotImplementedError(f"{type(self).__name__} must define corrupt")

    def network_time(self, t: jax.Array) -> jax.Array:
        """The time as the network reads it (identity unless a head rescales it)."""
        return t

    def loss_terms(
        self,
        condition: jax.Array,
        actions: jax.Array,
        *,
        rng: jax.Array,
        train: bool,
        draws: Mapping[str, jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        """Squared error of the network's output against the path's target, per element.

        `draws`: ``{"time": [b, w] in the head's units, "noise": float32[b, w, H*A]}`` used
        instead of the draws from `rng` (a replay of another program's training draws).
        """
        b, w = actions.shape[:2]
        clean = jnp.clip(actions, -self.max_action, self.max_action)
        clean = clean.reshape(b, w, self.chunk_size)
        time_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        if draws is None:
            t = self.draw_time(time_rng, (b, w))
            noise = jax.random.normal(noise_rng, clean.shape, jnp.float32)
        else:
            t, noise = _replayed(draws, (b, w), clean.shape)
        noisy, target = self.corrupt(clean, noise, t)
        output = self.network(noisy, condition, self.network_time(t), train=train, rng=dropout_rng)
        return {"mse": jnp.square(output - target).reshape(actions.shape)}


def _replayed(
    draws: Mapping[str, jax.Array], time_shape: tuple[int, ...], noise_shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """(time, noise) from given draws, each checked against the shape it replaces."""
    unknown = sorted(set(draws) - {"time", "noise"})
    if unknown or "time" not in draws or "noise" not in draws:
        raise ValueError(f"draws: expected keys 'time' and 'noise', got {sorted(draws)}")
    t, noise = jnp.asarray(draws["time"]), jnp.asarray(draws["noise"], jnp.float32)
    for name, value, shape in (("time", t, time_shape), ("noise", noise, noise_shape)):
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"draws[{name!r}]: expected shape {list(shape)}, got {value.shape}")
    return t, noise

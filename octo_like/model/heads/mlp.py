"""The residual MLP denoiser shared by the diffusion and flow-matching heads.

One network serves both: it maps ``(noisy chunk, readout embedding, time in [0, 1])`` to a
vector the size of the chunk (epsilon for DDPM, velocity for flow matching). Dropout draws from
an explicit key so callers, not hidden RNG streams, decide the randomness.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision

# Learned Fourier frequencies start as N(0, FOURIER_INIT_STD^2) over time in [0, 1]: a few
# cycles across the range, enough to tell adjacent diffusion steps apart at K = 20.
FOURIER_INIT_STD = 4.0


class FourierTimeFeatures(nnx.Module):
    """``[cos(2 pi t w), sin(2 pi t w)]`` with learned frequencies ``w``: ``float32[..., dim]``."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, init_std: float = FOURIER_INIT_STD):
        if dim % 2:
            raise ValueError(f"time feature dim must be even, got {dim}")
        self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), (dim // 2,)))

    def __call__(self, t: jax.Array) -> jax.Array:
        """``t``: ``float[...]`` -> ``float32[..., dim]``."""
        angles = 2.0 * jnp.pi * t[..., None].astype(jnp.float32) * self.kernel[...]
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimeEmbedding(nnx.Module):
    """Fourier features followed by a two-layer MLP (``2 * dim`` hidden, swish)."""

    def __init__(
        self, dim: int, *, rngs: nnx.Rngs, dtype: Any = None, fourier_init_std: float | None = None
    ):
        self.fourier = FourierTimeFeatures(
            dim,
            rngs=rngs,
            init_std=FOURIER_INIT_STD if fourier_init_std is None else fourier_init_std,
        )
        self.hidden = precision.Linear(dim, 2 * dim, dtype=dtype, rngs=rngs)
        self.out = precision.Linear(2 * dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        """``t``: ``float[...]`` in ``[0, 1]`` -> ``float[..., dim]``."""
        return self.out(nnx.swish(self.hidden(self.fourier(t))))


class ResidualMLPBlock(nnx.Module):
    """``x + Dense(swish(Dense_4h(LayerNorm(Dropout(x)))))``."""

    def __init__(self, dim: int, dropout_rate: float, *, rngs: nnx.Rngs, dtype: Any = None):
        self.dropout = nnx.Dropout(dropout_rate)
        self.norm = precision.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.up = precision.Linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.down = precision.Linear(4 * dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, rng: jax.Array | None) -> jax.Array:
        h = self.dropout(x, deterministic=not train, rngs=rng)
        h = self.down(nnx.swish(self.up(self.norm(h))))
        return x + h


class ResidualMLPDenoiser(nnx.Module):
    """Predicts a chunk-sized vector from the noisy chunk, a condition and the time.

    Input is ``concat(time_embedding(t), condition, x)`` projected to ``hidden_dim``, then
    ``num_blocks`` residual blocks, swish, and a Dense to ``out_dim``.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        cond_dim: int,
        hidden_dim: int,
        num_blocks: int,
        dropout_rate: float,
        time_dim: int,
        rngs: nnx.Rngs,
        dtype: Any = None,
        fourier_init_std: float | None = None,
    ):
        self.dropout_rate = dropout_rate
        self.time_embedding = TimeEmbedding(
            time_dim, rngs=rngs, dtype=dtype, fourier_init_std=fourier_init_std
        )
        self.proj_in = precision.Linear(
            time_dim + cond_dim + in_dim, hidden_dim, dtype=dtype, rngs=rngs
        )
        self.blocks = nnx.List(
            [
                ResidualMLPBlock(hidden_dim, dropout_rate, rngs=rngs, dtype=dtype)
                for _ in range(num_blocks)
            ]
        )
        self.proj_out = precision.Linear(hidden_dim, in_dim, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        condition: jax.Array,
        t: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """``x float[*lead, in_dim]``, ``condition float[*lead, cond_dim]``, ``t float[*lead]``.

        Returns ``float32[*lead, in_dim]``. ``rng`` is required when ``train`` and dropout > 0.
        """
        if train and self.dropout_rate > 0 and rng is None:
            raise ValueError("ResidualMLPDenoiser: train=True with dropout needs an rng key")
        t = jnp.broadcast_to(t, x.shape[:-1])
        h = jnp.concatenate(
            [self.time_embedding(t).astype(x.dtype), condition.astype(x.dtype), x], axis=-1
        )
        h = self.proj_in(h)
        keys = (
            jax.random.split(rng, len(self.blocks))
            if rng is not None
            else [None] * len(self.blocks)
        )
        for block, key in zip(self.blocks, keys, strict=True):
            h = block(h, train=train, rng=key)
        return self.proj_out(nnx.swish(h)).astype(jnp.float32)

"""Multi-head attention pooling of the readout tokens (Octo's `MAPHead`, after big_vision's):
a learned probe attends over a window step's readouts, then a pre-LN MLP adds a residual.

Octo's L1 / MSE heads pool with it by default (``use_map=True`` in its examples/02 fine-tuning);
Octo-1.5's diffusion head mean-pools. Readouts ``float[b, w, n, d]`` -> ``float32[b, w, d]``.

Parameter names follow the converter (`octo_like.model.octo_import.params`): ``probe [1, 1, d]``,
``attention/{query, key, value, out}`` (``d x d``; Octo's per-head kernels reshaped), ``norm``,
``mlp/{fc1, fc2}``. Training applies dropout (Octo's rate 0.1) after the MLP's GELU and after its
output; the two keep masks may be given (`draws`) to replay another program's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision

_XAVIER = nnx.initializers.xavier_uniform()
_TINY_BIAS = nnx.initializers.normal(1e-6)  # Octo's MlpBlock bias init
DROPOUT_KEYS = ("map_dropout_hidden", "map_dropout_out")


class MAPPooling(nnx.Module):
    """One probe, `num_heads`-head attention over the readouts, LayerNorm, MLP (``mlp_dim``,
    default ``4 d``), residual."""

    def __init__(
        self,
        width: int,
        *,
        rngs: nnx.Rngs,
        num_heads: int = 8,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.1,
        dtype: Any = None,
    ):
        if width % num_heads:
            raise ValueError(f"MAP pooling: width {width} is not divisible by {num_heads} heads")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"MAP pooling: dropout_rate must be in [0, 1), got {dropout_rate}")
        dt = jnp.float32 if dtype is None else dtype
        self.num_heads, self.dropout_rate = num_heads, float(dropout_rate)
        self.probe = nnx.Param(_XAVIER(rngs.params(), (1, 1, width), jnp.float32))

        def dense(n_in: int, n_out: int, bias_init=nnx.initializers.zeros) -> precision.Linear:
            return precision.Linear(
                n_in, n_out, dtype=dt, kernel_init=_XAVIER, bias_init=bias_init, rngs=rngs
            )

        self.attention = nnx.Dict(
            query=dense(width, width), key=dense(width, width),
            value=dense(width, width), out=dense(width, width),
        )  # fmt: skip
        self.norm = precision.LayerNorm(width, dtype=dt)
        hidden = 4 * width if mlp_dim is None else mlp_dim
        self.mlp = nnx.Dict(
            fc1=dense(width, hidden, _TINY_BIAS), fc2=dense(hidden, width, _TINY_BIAS)
        )

    def __call__(
        self,
        readouts: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        draws: Mapping[str, jax.Array] | None = None,
    ) -> jax.Array:
        """``float[b, w, n, d] -> float32[b, w, d]``. In training, dropout draws its keep masks
        from `rng`, or takes them from `draws` (``map_dropout_hidden`` bool[b*w, 1, mlp_dim],
        ``map_dropout_out`` bool[b*w, 1, d])."""
        *lead, n, d = readouts.shape
        x = readouts.reshape(-1, n, d)
        rows, h = x.shape[0], self.num_heads
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (rows, 1, d))
        att = self.attention
        q = att["query"](probe).reshape(rows, 1, h, d // h)
        k, v = (att[name](x).reshape(rows, n, h, d // h) for name in ("key", "value"))
        q = q / math.sqrt(d // h)  # scaled before the product, as flax does
        logits = jnp.einsum("rqhc,rkhc->rhqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        pooled = att["out"](jnp.einsum("rhqk,rkhc->rqhc", weights, v).reshape(rows, 1, d))
        hidden = jax.nn.gelu(self.mlp["fc1"](self.norm(pooled)))
        keep_hidden, keep_out = self._keep_masks(train, rng, draws, hidden.shape, pooled.shape)
        hidden = _apply_dropout(hidden, keep_hidden, self.dropout_rate)
        out = _apply_dropout(self.mlp["fc2"](hidden), keep_out, self.dropout_rate)
        return (pooled + out).astype(jnp.float32).reshape(*lead, d)

    def _keep_masks(self, train, rng, draws, hidden_shape, out_shape):
        if not train or self.dropout_rate == 0.0:
            return None, None
        if draws is not None and DROPOUT_KEYS[0] in draws:
            masks = tuple(jnp.asarray(draws[key], bool) for key in DROPOUT_KEYS)
            for key, mask, shape in zip(
                DROPOUT_KEYS, masks, (hidden_shape, out_shape), strict=True
            ):
                if tuple(mask.shape) != tuple(shape):
                    raise ValueError(f"draws[{key!r}]: expected {list(shape)}, got {mask.shape}")
            return masks
        if rng is None:
            raise ValueError("MAP pooling in training needs an rng for its dropout")
        keep = 1.0 - self.dropout_rate
        hidden_rng, out_rng = jax.random.split(rng)
        return (
            jax.random.bernoulli(hidden_rng, keep, hidden_shape),
            jax.random.bernoulli(out_rng, keep, out_shape),
        )


def _apply_dropout(x: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout with the given keep mask (identity without one)."""
    if keep is None:
        return x
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))

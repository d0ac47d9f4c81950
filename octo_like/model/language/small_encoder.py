"""A small trainable text encoder for setups without a pretrained T5 (laptop runs, tests).

Token embedding over the sentencepiece vocabulary, learned absolute positions, a few pre-LayerNorm
transformer layers with padded keys masked out, and a final LayerNorm. It consumes the same
``tokens`` / ``mask`` as ``T5Encoder``, so the two are interchangeable behind the task tokenizer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from octo_like.model import precision
from octo_like.model.language.t5 import check_tokens_and_mask, dropout_rngs


class _HeadsProjection(nnx.Module):
    """flax `MultiHeadAttention`'s projections (same parameter names and shapes, so old
    checkpoints load): ``in -> [heads, head_dim]`` or, with `merge`, ``[heads, head_dim] -> out``,
    through `precision.matmul` (gradients reduced in float32)."""

    def __init__(self, shape_in: tuple[int, ...], shape_out: tuple[int, ...], *, dtype,
                 rngs: nnx.Rngs):  # fmt: skip
        fan_in, fan_out = int(np.prod(shape_in)), int(np.prod(shape_out))
        kernel = nnx.initializers.lecun_normal()(rngs.params(), (fan_in, fan_out), jnp.float32)
        self.kernel = nnx.Param(kernel.reshape(*shape_in, *shape_out))
        self.bias = nnx.Param(jnp.zeros(shape_out, jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array, merged_axes: int = 1) -> jax.Array:
        """x: [..., *shape_in] (its last `merged_axes` axes) -> [..., *shape_out]."""
        kernel = self.kernel[...]
        bias = self.bias[...]
        fan_out = int(np.prod(bias.shape))
        flat = x.reshape(*x.shape[: x.ndim - merged_axes], -1).astype(self.dtype)
        y = precision.matmul(flat, kernel.reshape(-1, fan_out))
        y = precision.add_param(y, bias.reshape(fan_out))
        return y.reshape(*y.shape[:-1], *bias.shape)


class _SelfAttention(nnx.Module):
    """Multi-head self-attention (float32 logits and softmax) with explicit dropout keys."""

    def __init__(self, width: int, num_heads: int, dropout_rate: float, *, rngs, dtype):
        heads = (num_heads, width // num_heads)
        self.query = _HeadsProjection((width,), heads, dtype=dtype, rngs=rngs)
        self.key = _HeadsProjection((width,), heads, dtype=dtype, rngs=rngs)
        self.value = _HeadsProjection((width,), heads, dtype=dtype, rngs=rngs)
        self.out = _HeadsProjection(heads, (width,), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x, mask, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
        """x: [b, L, width]; mask: bool[b, 1, 1, L] (key padding) -> [b, L, width]."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # [b, L, h, c]
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = jnp.where(mask, logits / np.sqrt(q.shape[-1]), jnp.finfo(jnp.float32).min)
        weights = self.dropout(jax.nn.softmax(logits, axis=-1), deterministic=not train, rngs=rngs)
        mixed = jnp.einsum("bhqk,bkhc->bqhc", weights.astype(v.dtype), v)
        return self.out(mixed, merged_axes=2)


class _EncoderLayer(nnx.Module):
    """Pre-LN block: x + attn(LN(x)); x + MLP(LN(x)), MLP 4x wide with GELU."""

    def __init__(
        self, width: int, num_heads: int, dropout_rate: float, *, rngs: nnx.Rngs, dtype: Any
    ):
        self.attention_norm = precision.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.attention = _SelfAttention(width, num_heads, dropout_rate, rngs=rngs, dtype=dtype)
        self.mlp_norm = precision.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.mlp_in = precision.Linear(width, 4 * width, dtype=dtype, rngs=rngs)
        self.mlp_out = precision.Linear(4 * width, width, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self, x: jax.Array, attention_mask: jax.Array, *, train: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """x: float32[b, L, width]; attention_mask: bool[b, 1, 1, L] (key padding)."""
        drop = lambda h: self.dropout(h, deterministic=not train, rngs=rngs)  # noqa: E731
        h = self.attention(self.attention_norm(x), attention_mask, train=train, rngs=rngs)
        x = x + drop(h).astype(jnp.float32)
        h = self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))
        return x + drop(h).astype(jnp.float32)


class SmallTextEncoder(nnx.Module):
    """Trainable instruction encoder: int32[b, L] tokens -> dtype[b, L, width] embeddings."""

    def __init__(
        self,
        vocab_size: int,
        *,
        width: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        max_length: int = 16,
        dropout_rate: float = 0.0,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.vocab_size = vocab_size
        self.width = width
        self.max_length = max_length
        self.dtype = dtype
        self.dropout_rate = dropout_rate
        self.token_embedding = nnx.Embed(
            vocab_size, width, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
        )
        self.position_embedding = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (max_length, width), jnp.float32)
        )
        self.layers = nnx.List(
            [
                _EncoderLayer(width, num_heads, dropout_rate, rngs=rngs, dtype=dtype)
                for _ in range(depth)
            ]
        )
        self.final_norm = precision.LayerNorm(width, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        tokens: jax.Array,
        mask: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """tokens: int32[b, L], mask: bool[b, L] with L <= max_length -> dtype[b, L, width].
        Dropout draws from `rng` (required when training with dropout)."""
        mask = check_tokens_and_mask(tokens, mask)
        rngs = dropout_rngs(train, self.dropout_rate, rng, "SmallTextEncoder")
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"tokens have length {length} > max_length {self.max_length}")
        x = self.token_embedding(tokens) + self.position_embedding[...][:length]
        attention_mask = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attention_mask, train=train, rngs=rngs)
        return self.final_norm(x).astype(self.dtype)

"""A small trainable text encoder for setups without a pretrained T5 (laptop runs, tests).

Token embedding over the sentencepiece vocabulary, learned absolute positions, a few pre-LayerNorm
transformer layers with padded keys masked out, and a final LayerNorm. It consumes the same
``tokens`` / ``mask`` as ``T5Encoder``, so the two are interchangeable behind the task tokenizer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model.language.t5 import check_tokens_and_mask


class _EncoderLayer(nnx.Module):
    """Pre-LN block: x + attn(LN(x)); x + MLP(LN(x)), MLP 4x wide with GELU."""

    def __init__(
        self, width: int, num_heads: int, dropout_rate: float, *, rngs: nnx.Rngs, dtype: Any
    ):
        self.attention_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads,
            width,
            dtype=dtype,
            dropout_rate=dropout_rate,
            decode=False,
            rngs=rngs,
        )
        self.mlp_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(width, 4 * width, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * width, width, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array, attention_mask: jax.Array, *, train: bool) -> jax.Array:
        """x: float32[b, L, width]; attention_mask: bool[b, 1, 1, L] (key padding)."""
        deterministic = not train
        h = self.attention(self.attention_norm(x), mask=attention_mask, deterministic=deterministic)
        x = x + self.dropout(h, deterministic=deterministic).astype(jnp.float32)
        h = self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))
        return x + self.dropout(h, deterministic=deterministic).astype(jnp.float32)


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
        self.final_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)

    def __call__(self, tokens: jax.Array, mask: jax.Array, *, train: bool = False) -> jax.Array:
        """tokens: int32[b, L], mask: bool[b, L] with L <= max_length -> dtype[b, L, width]."""
        mask = check_tokens_and_mask(tokens, mask)
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"tokens have length {length} > max_length {self.max_length}")
        x = self.token_embedding(tokens) + self.position_embedding[...][:length]
        attention_mask = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attention_mask, train=train)
        return self.final_norm(x).astype(self.dtype)

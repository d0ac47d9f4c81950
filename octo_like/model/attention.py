"""Masked softmax attention whose backward pass recomputes the attention weights.

Plain autodiff keeps several float32 [b, h, N, N] tensors per layer alive for the backward pass
(logits, masked logits, exponentials, weights). With Octo's ~660 tokens that dominates training
memory on CPU, where XLA does not honour `jax.checkpoint`. This version saves only q, k, v, the
output and the per-row log-sum-exp (O(N) per head) and rebuilds the weights in the backward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_NEG = jnp.finfo(jnp.float32).min


def _scores(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """float32[b, N, N] scores of one head (q, k: float[b, N, c]); mask bool[b|1, N, N]."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * scale
    return jnp.where(mask, logits, _NEG)


def _per_head(fn, *arrays):
    """Runs `fn` one head at a time (lax.map), so only one [b, N, N] block is live at once.

    Arrays are [b, N, h, ...]; `fn` gets [b, N, ...] slices and its outputs are restacked.
    """
    moved = [jnp.moveaxis(a, 2, 0) for a in arrays]
    outputs = jax.lax.map(lambda xs: fn(*xs), moved)
    return jax.tree.map(lambda o: jnp.moveaxis(o, 0, 2), outputs)


@jax.custom_vjp
def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q, k, v: float[b, N, h, c]; mask: bool[b|1, 1, N, N] (query, key) -> float[b, N, h, c].

    Every query row must see at least one key (the block transformer guarantees it).
    """
    return _forward(q, k, v, mask)[0]


def _forward(q, k, v, mask):
    head_mask = mask[:, 0]

    def head(q, k, v):
        scores = _scores(q, k, head_mask)
        lse = jax.nn.logsumexp(scores, axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", jnp.exp(scores - lse[..., None]).astype(v.dtype), v)
        return out, lse

    out, lse = _per_head(head, q, k, v)  # lse: float32[b, N, h]
    return out, (q, k, v, mask, out, lse)


def _backward(residuals, d_out):
    q, k, v, mask, out, lse = residuals
    head_mask = mask[:, 0]
    scale = 1.0 / math.sqrt(q.shape[-1])

    def head(q, k, v, out, lse, d_out):
        f32 = lambda x: x.astype(jnp.float32)
        weights = jnp.exp(_scores(q, k, head_mask) - lse[..., None])  # rebuilt, [b, N, N]
        d_v = jnp.einsum("bqk,bqc->bkc", weights, f32(d_out))
        d_weights = jnp.einsum("bqc,bkc->bqk", f32(d_out), f32(v))
        row = jnp.einsum("bqc,bqc->bq", f32(d_out), f32(out))[..., None]
        d_scores = weights * (d_weights - row) * scale
        d_q = jnp.einsum("bqk,bkc->bqc", d_scores, f32(k))
        d_k = jnp.einsum("bqk,bqc->bkc", d_scores, f32(q))
        return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)

    d_q, d_k, d_v = _per_head(head, q, k, v, out, lse, d_out)
    return d_q, d_k, d_v, None


masked_attention.defvjp(_forward, _backward)

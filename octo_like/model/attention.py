"""Masked softmax attention, one implementation per backend, all with the same numerics.

`attend(q, k, v, mask, implementation)` dispatches on `ATTENTION_IMPLEMENTATIONS`:

- ``lean`` (the CPU default): `masked_attention` below, one head at a time under `lax.map`, with a
  backward pass that recomputes the weights. Plain autodiff keeps several float32 [b, h, N, N]
  tensors per layer alive (logits, masked logits, exponentials, weights); with Octo's ~660
  tokens that dominates training memory on CPU, where XLA does not honour `jax.checkpoint`. This
  path saves only q, k, v, the output and two per-row float32 statistics (the maximum score and
  the log-sum of exponentials below it). It serializes the heads, so it
  is slow on accelerators, and XLA's cost analysis counts the `lax.map` body once.
- ``einsum``: all heads at once, two batched einsums around a float32 softmax.
- ``xla`` / ``cudnn``: `jax.nn.dot_product_attention` with that implementation; ``cudnn`` is
  cuDNN's fused flash attention (GPU, bfloat16/float16, head dim a multiple of 8 up to 128); the
  boolean mask becomes an additive bias.
- ``auto``: ``lean`` on CPU, ``cudnn`` on NVIDIA GPUs where it applies (half precision, head
  dim a multiple of 8 up to 128, an even token count), else ``einsum``; ``einsum`` on TPU.

Every implementation takes q, k, v float[b, N, h, c] and mask bool[b|1, 1, N, N] and returns
float[b, N, h, c]; scores and softmax are computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_NEG = jnp.finfo(jnp.float32).min

ATTENTION_IMPLEMENTATIONS = ("auto", "lean", "einsum", "xla", "cudnn")


def resolve_implementation(
    implementation: str, *, platform: str, dtype, head_dim: int, seq_len: int = 2
) -> str:
    """The concrete implementation `auto` stands for on `platform` ('cpu', 'cuda', 'rocm',
    'tpu'; 'gpu' counts as CUDA) for `seq_len` tokens."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose from "
            f"{list(ATTENTION_IMPLEMENTATIONS)}"
        )
    if implementation != "auto":
        return implementation
    if platform == "cpu":
        return "lean"
    if platform in ("gpu", "cuda") and cudnn_applies(dtype, head_dim, seq_len):
        return "cudnn"
    return "einsum"


def cudnn_applies(dtype, head_dim: int, seq_len: int) -> bool:
    """cuDNN flash attention needs half-precision inputs, head dims a multiple of 8 <= 128 and,
    with a mask (an additive bias for cuDNN) in training, an even number of tokens."""
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return half and head_dim % 8 == 0 and head_dim <= 128 and seq_len % 2 == 0


def accelerator_platform() -> str:
    """'cpu', 'tpu', 'cuda' (NVIDIA GPUs) or 'rocm' (other GPUs), from JAX's default devices."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    return "cuda" if jax.devices()[0].device_kind.startswith("NVIDIA") else "rocm"


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, implementation: str
) -> jax.Array:
    """q, k, v: float[b, N, h, c]; mask: bool[b|1, 1, N, N] -> float[b, N, h, c] (q's dtype).

    `implementation` must be concrete (see `resolve_implementation`).
    """
    if implementation == "lean":
        return masked_attention(q, k, v, mask)
    if implementation == "einsum":
        return einsum_attention(q, k, v, mask)
    if implementation in ("xla", "cudnn"):
        out = jax.nn.dot_product_attention(
            q, k, v, mask=mask.astype(bool), implementation=implementation
        )
        return out.astype(q.dtype)
    raise ValueError(
        f"attention implementation {implementation!r} is not concrete; choose from "
        f"{list(ATTENTION_IMPLEMENTATIONS[1:])} or resolve 'auto' first"
    )


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """All heads at once: float32 scores and softmax, weights cast back to v's dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    weights = jax.nn.softmax(jnp.where(mask, logits, _NEG), axis=-1)
    return jnp.einsum("bhqk,bkhc->bqhc", weights.astype(v.dtype), v).astype(q.dtype)


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

    A query row that sees no key attends uniformly to all keys, as softmax over
    dtype-minimum logits does in every other implementation (and in Octo).
    """
    return _forward(q, k, v, mask)[0]


def _weights(scores: jax.Array, row_max: jax.Array, log_sum: jax.Array) -> jax.Array:
    """Softmax weights from the row's max and log-sum: (scores - max) first, so an all-masked
    row (every score the dtype minimum, where max + log N rounds back to the minimum) still
    sums to one."""
    return jnp.exp((scores - row_max[..., None]) - log_sum[..., None])


def _forward(q, k, v, mask):
    head_mask = mask[:, 0]

    def head(q, k, v):
        scores = _scores(q, k, head_mask)
        row_max = jax.lax.stop_gradient(jnp.max(scores, axis=-1))
        log_sum = jnp.log(jnp.sum(jnp.exp(scores - row_max[..., None]), axis=-1))
        weights = _weights(scores, row_max, log_sum)
        out = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v)
        return out, row_max, log_sum

    out, row_max, log_sum = _per_head(head, q, k, v)  # float32[b, N, h] each
    return out, (q, k, v, mask, out, row_max, log_sum)


def _backward(residuals, d_out):
    q, k, v, mask, out, row_max, log_sum = residuals
    head_mask = mask[:, 0]
    scale = 1.0 / math.sqrt(q.shape[-1])

    def head(q, k, v, out, row_max, log_sum, d_out):
        f32 = lambda x: x.astype(jnp.float32)
        weights = _weights(_scores(q, k, head_mask), row_max, log_sum)  # rebuilt, [b, N, N]
        d_v = jnp.einsum("bqk,bqc->bkc", weights, f32(d_out))
        d_weights = jnp.einsum("bqc,bkc->bqk", f32(d_out), f32(v))
        row = jnp.einsum("bqc,bqc->bq", f32(d_out), f32(out))[..., None]
        d_scores = weights * (d_weights - row) * scale
        d_q = jnp.einsum("bqk,bkc->bqc", d_scores, f32(k))
        d_k = jnp.einsum("bqk,bqc->bkc", d_scores, f32(q))
        return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)

    d_q, d_k, d_v = _per_head(head, q, k, v, out, row_max, log_sum, d_out)
    return d_q, d_k, d_v, None


masked_attention.defvjp(_forward, _backward)

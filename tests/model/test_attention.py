"""The memory-lean attention matches plain masked softmax attention, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from octo_like.model.attention import masked_attention


def reference(q, k, v, mask):
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, -1), v)


def test_values_and_gradients_match_plain_attention():
    rng = np.random.default_rng(0)
    b, n, h, c = 2, 7, 3, 4
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32) for _ in range(3))
    mask = rng.random((b, 1, n, n)) < 0.5
    mask[..., np.arange(n), np.arange(n)] = True  # every query sees at least itself
    mask = jnp.asarray(mask)
    np.testing.assert_allclose(masked_attention(q, k, v, mask), reference(q, k, v, mask), atol=1e-5)
    weights = jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32)
    loss = lambda f: lambda q, k, v: (f(q, k, v, mask) * weights).sum()
    ours = jax.grad(loss(masked_attention), argnums=(0, 1, 2))(q, k, v)
    theirs = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
    for a, r in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, r, atol=1e-5)


def test_masked_keys_get_no_gradient_and_no_influence():
    rng = np.random.default_rng(1)
    b, n, h, c = 1, 5, 2, 4
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(np.tril(np.ones((n, n), bool))[None, None])  # causal
    out = masked_attention(q, k, v, mask)
    changed = masked_attention(q, k.at[:, -1].add(5.0), v.at[:, -1].add(5.0), mask)
    np.testing.assert_allclose(out[:, :-1], changed[:, :-1], atol=1e-6)
    d_v = jax.grad(lambda v: masked_attention(q, k, v, mask)[:, 0].sum())(v)
    assert np.abs(np.asarray(d_v[:, 1:])).max() == 0.0

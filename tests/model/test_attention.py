"""Every attention implementation matches plain masked softmax attention, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from octo_like.model.attention import (
    ATTENTION_IMPLEMENTATIONS,
    attend,
    masked_attention,
    resolve_implementation,
)


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


# --- Every implementation against the float32 reference, values and gradients -------------------

# cudnn runs only on a GPU; the CPU runs every other path.
IMPLEMENTATIONS = [
    name
    for name in ATTENTION_IMPLEMENTATIONS[1:]
    if name != "cudnn" or jax.default_backend() == "gpu"
]


def _block_mask(b, n):
    """A causal block mask with key padding, like the block transformer's: bool[b, 1, n, n]."""
    rng = np.random.default_rng(3)
    mask = np.tril(np.ones((n, n), bool))[None, None].repeat(b, 0)
    mask &= rng.random((b, 1, 1, n)) < 0.8
    mask[..., np.arange(n), np.arange(n)] = True
    return jnp.asarray(mask)


def _relative_error(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_implementation_matches_reference(implementation, dtype, tolerance):
    if implementation == "cudnn" and dtype == "float32":
        pytest.skip("cuDNN flash attention is half precision only ('auto' never picks it)")
    with jax.default_matmul_precision("highest"):  # no TF32 on GPUs for the float32 check
        _check_against_reference(implementation, dtype, tolerance)


def _check_against_reference(implementation, dtype, tolerance):
    rng = np.random.default_rng(0)
    b, n, h, c = 2, 24, 2, 16
    q32, k32, v32 = (jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32) for _ in range(3))
    mask = _block_mask(b, n)
    weights = jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32)
    cast = lambda x: x.astype(dtype)

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v).astype(jnp.float32) * weights).sum()

    ours = lambda q, k, v: attend(q, k, v, mask, implementation)
    out = ours(cast(q32), cast(k32), cast(v32))
    assert out.dtype == jnp.dtype(dtype) and out.shape == (b, n, h, c)
    # The reference sees the same (rounded) inputs, in float32.
    args32 = [cast(x).astype(jnp.float32) for x in (q32, k32, v32)]
    assert _relative_error(out, reference(*args32, mask)) <= tolerance
    grads = jax.grad(loss(ours), argnums=(0, 1, 2))(*[cast(x) for x in (q32, k32, v32)])
    expected = jax.grad(loss(lambda q, k, v: reference(q, k, v, mask)), argnums=(0, 1, 2))(*args32)
    for got, want in zip(grads, expected, strict=True):
        assert got.dtype == jnp.dtype(dtype)
        assert _relative_error(got, want) <= tolerance


def test_auto_picks_by_backend_dtype_and_head_dim():
    pick = lambda platform, dtype, head_dim=64: resolve_implementation(
        "auto", platform=platform, dtype=dtype, head_dim=head_dim
    )
    assert pick("cpu", jnp.bfloat16) == "lean"
    assert pick("gpu", jnp.bfloat16) == "cudnn"
    assert pick("gpu", jnp.float32) == "einsum"  # cuDNN flash attention is half precision only
    assert pick("gpu", jnp.bfloat16, head_dim=12) == "einsum"
    assert pick("gpu", jnp.bfloat16, head_dim=256) == "einsum"
    assert pick("tpu", jnp.bfloat16) == "einsum"
    assert pick("rocm", jnp.bfloat16) == "einsum"  # cuDNN is NVIDIA's
    odd = resolve_implementation(
        "auto", platform="cuda", dtype=jnp.bfloat16, head_dim=64, seq_len=273
    )
    assert odd == "einsum"  # cuDNN refuses odd token counts with a mask in training
    assert resolve_implementation("xla", platform="cpu", dtype=jnp.float32, head_dim=7) == "xla"
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        resolve_implementation("flash", platform="gpu", dtype=jnp.bfloat16, head_dim=64)
    with pytest.raises(ValueError, match="not concrete"):
        attend(*(jnp.zeros((1, 2, 1, 8)),) * 3, jnp.ones((1, 1, 2, 2), bool), "auto")


@pytest.mark.parametrize("implementation", [i for i in IMPLEMENTATIONS if i != "cudnn"])
def test_a_query_that_sees_no_key_attends_uniformly_and_stays_finite(implementation):
    """Octo's convention (masked logits = the dtype's minimum): a row with no visible key is
    the mean of every value, never NaN; its gradients are finite. The lean path failed this
    before its weights subtracted the row maximum first (max + log N rounds to the minimum)."""
    rng = np.random.default_rng(4)
    b, n, h, c = 2, 6, 2, 4
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, c)), jnp.float32) for _ in range(3))
    mask = np.tril(np.ones((n, n), bool))[None, None].repeat(b, 0)
    mask[0, 0, :2] = False  # the first two queries of example 0 see nothing
    mask = jnp.asarray(mask)
    out = attend(q, k, v, mask, implementation)
    np.testing.assert_allclose(out[0, :2], jnp.broadcast_to(v[0].mean(0), (2, h, c)), atol=1e-6)
    np.testing.assert_allclose(out, reference(q, k, v, mask), atol=1e-5)
    grads = jax.grad(lambda q, k, v: attend(q, k, v, mask, implementation).sum(), (0, 1, 2))(
        q, k, v
    )
    assert all(bool(jnp.isfinite(g).all()) for g in grads)

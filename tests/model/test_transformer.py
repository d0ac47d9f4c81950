"""Transformer numerics/presets and the BlockTransformer's information-flow guarantees."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from octo_like.model.block_transformer import BlockTransformer
from octo_like.model.tokens import (
    TokenGroup,
    build_attention_mask,
    combine_with_padding,
    default_rules,
    split_specs,
)
from octo_like.model.transformer import (
    TRANSFORMER_PRESETS,
    Transformer,
    TransformerConfig,
    count_params,
)

TINY = TransformerConfig(num_layers=2, width=32, num_heads=4, mlp_dim=64)


@functools.partial(nnx.jit, static_argnames="train")
def forward(model, x, mask, train=False, rng=None):
    """Jitted call: eager op-by-op dispatch is slower than one compile on CI cores."""
    return model(x, mask, train=train, rng=rng)


def per_layer_params(d: int, m: int) -> int:
    attention = 4 * (d * d + d)  # q, k, v, out projections with biases
    mlp = d * m + m + m * d + d
    layer_norms = 2 * 2 * d
    return attention + mlp + layer_norms


@pytest.mark.parametrize("name", ["dummy", "tiny", "small", "base"])
def test_preset_parameter_counts(name):
    cfg = TRANSFORMER_PRESETS[name]
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    expected = cfg.num_layers * per_layer_params(cfg.width, cfg.mlp_dim) + 2 * cfg.width
    assert count_params(model) == expected


def test_small_and_base_sizes():
    small, base = TRANSFORMER_PRESETS["small"], TRANSFORMER_PRESETS["base"]
    assert (small.num_layers, small.width, small.num_heads, small.mlp_dim) == (12, 384, 6, 1536)
    assert (base.num_layers, base.width, base.num_heads, base.mlp_dim) == (12, 768, 12, 3072)
    # a 12-layer 384-wide block, by hand: 1,774,464 per layer
    assert per_layer_params(384, 1536) == 1_774_464


def _inputs(b=2, n=7, d=32, seed=0):
    x = jax.random.normal(jax.random.key(seed), (b, n, d))
    rule = np.tril(np.ones((n, n), bool))
    return x, combine_with_padding(rule, jnp.ones((b, n), bool))


def test_shapes_dtype_and_causal_mask():
    model = Transformer(TINY, rngs=nnx.Rngs(0))
    x, mask = _inputs()
    y = forward(model, x, mask, train=False)
    assert y.shape == x.shape and y.dtype == jnp.float32
    # causal: changing the last token leaves earlier outputs unchanged
    noise = jax.random.normal(jax.random.key(5), x.shape[::2])[:, None]
    y2 = forward(model, x.at[:, -1:].add(noise), mask, train=False)
    np.testing.assert_allclose(y2[:, :-1], y[:, :-1], atol=1e-6, rtol=0)
    assert np.abs(y2[:, -1] - y[:, -1]).max() > 1e-2
    with pytest.raises(ValueError, match="mask"):
        model(x, mask[:, :, :3], train=False)
    with pytest.raises(ValueError, match="32"):
        model(x[..., :16], mask, train=False)


def test_bfloat16_compute_close_to_float32():
    x, mask = _inputs()
    f32 = Transformer(TINY, rngs=nnx.Rngs(0))
    bf16 = Transformer(dataclasses.replace(TINY, dtype="bfloat16"), rngs=nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params), "parameters stay float32"
    y32, y16 = forward(f32, x, mask, train=False), forward(bf16, x, mask, train=False)
    assert y16.dtype == jnp.float32
    assert not np.array_equal(y32, y16), "bfloat16 compute must actually run in bfloat16"
    np.testing.assert_allclose(y16, y32, atol=0.1, rtol=0)
    assert float(jnp.abs(y16 - y32).mean()) < 0.02


@pytest.mark.parametrize(
    "remat, scan",
    [("full", False), ("dots_saveable", False), ("dots_no_batch", True), ("none", True)],
)
def test_remat_and_scan_same_outputs_and_gradients(remat, scan):
    """Remat policies and the scan over layers change memory/compile time, never the numbers
    (dropout included: each layer gets the same key either way)."""
    cfg = dataclasses.replace(TINY, num_layers=3, dropout_rate=0.1, attention_dropout_rate=0.1)
    x, mask = _inputs()
    key = jax.random.key(7)

    def loss_and_grad(config):
        model = Transformer(config, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        def loss(p):
            y = nnx.merge(graphdef, p)(x, mask, train=True, rng=key)
            return jnp.sum(y**2), y

        jaxpr = str(jax.make_jaxpr(loss)(params))
        assert ("remat" in jaxpr or "checkpoint" in jaxpr) == (config.remat != "none")
        assert ("scan[" in jaxpr) == config.scan_layers
        (val, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return y, grads

    y_a, g_a = loss_and_grad(cfg)
    y_b, g_b = loss_and_grad(dataclasses.replace(cfg, remat=remat, scan_layers=scan))
    np.testing.assert_allclose(y_a, y_b, atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_remat_accepts_saved_booleans_and_rejects_typos():
    assert TransformerConfig(1, 8, 2, 16, remat=True).remat == "full"
    assert TransformerConfig(1, 8, 2, 16, remat=False).remat == "none"
    with pytest.raises(ValueError, match="remat must be one of"):
        TransformerConfig(1, 8, 2, 16, remat="dots")
    with pytest.raises(ValueError, match="attention must be one of"):
        TransformerConfig(1, 8, 2, 16, attention="flash")


def test_dropout_only_when_training():
    cfg = dataclasses.replace(TINY, dropout_rate=0.3, attention_dropout_rate=0.3)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    x, mask = _inputs()
    eval_a, eval_b = forward(model, x, mask, train=False), forward(model, x, mask, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    t1 = forward(model, x, mask, train=True, rng=jax.random.key(1))
    t1_again = forward(model, x, mask, train=True, rng=jax.random.key(1))
    t2 = forward(model, x, mask, train=True, rng=jax.random.key(2))
    np.testing.assert_array_equal(t1, t1_again)
    assert not np.allclose(t1, t2) and not np.allclose(t1, eval_a)
    with pytest.raises(ValueError, match="rng"):
        forward(model, x, mask, train=True)
    no_dropout = Transformer(TINY, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(
        forward(no_dropout, x, mask, train=True), forward(no_dropout, x, mask, train=False)
    )


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(num_layers=1, width=30, num_heads=4, mlp_dim=8)
    with pytest.raises(ValueError, match="dtype"):
        TransformerConfig(num_layers=1, width=32, num_heads=4, mlp_dim=8, dtype="float16")


# ---------------------------------------------------------------- BlockTransformer

B, W, D = 2, 3, 32
SPECS = default_rules(
    {"task_language": 3}, {"obs_a": 4, "obs_b": 2, "readout_action": 1, "readout_value": 1}
)
PREFIX, STEP = split_specs(SPECS)


def make_groups(seed=0):
    keys = iter(jax.random.split(jax.random.key(seed), 8))
    prefix = {
        s.name: TokenGroup(
            jax.random.normal(next(keys), (B, s.num_tokens, D)), jnp.ones((B, s.num_tokens), bool)
        )
        for s in PREFIX
    }
    step = {
        s.name: TokenGroup(
            jax.random.normal(next(keys), (B, W, s.num_tokens, D)),
            jnp.ones((B, W, s.num_tokens), bool),
        )
        for s in STEP
    }
    return prefix, step


@pytest.fixture(scope="module")
def block_apply():
    """A jitted pure function over the split state, compiled once per input structure."""
    graphdef, state = nnx.split(BlockTransformer(TINY, rngs=nnx.Rngs(3)))

    @jax.jit
    def apply(prefix, step, pad):
        model = nnx.merge(graphdef, state)
        return model(prefix, step, SPECS, timestep_pad_mask=pad, train=False)

    return apply


ALL_VALID = jnp.ones((B, W), bool)


def perturb(groups, name, index, scale=3.0):
    """Add random noise (not a constant: LayerNorm would cancel a per-token shift)."""
    out = dict(groups)
    g = groups[name]
    noise = scale * jax.random.normal(jax.random.key(11), g.tokens.shape)
    out[name] = TokenGroup(g.tokens.at[index].add(noise[index]), g.mask)
    return out


def close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def differ(a, b):
    """Clearly different, not float noise."""
    return np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2


def test_matches_manual_sequence_assembly(block_apply):
    model = BlockTransformer(TINY, rngs=nnx.Rngs(3))  # same weights as block_apply's
    prefix, step = make_groups()
    p_out, s_out = block_apply(prefix, step, ALL_VALID)
    # build the sequence by hand: prefix groups, then per timestep each group in order
    parts = [prefix["task_language"].tokens]
    for t in range(W):
        parts += [step[s.name].tokens[:, t] for s in STEP]
    x = jnp.concatenate(parts, axis=1)
    mask = combine_with_padding(build_attention_mask(PREFIX, STEP, W), jnp.ones(x.shape[:2], bool))
    y = forward(model.transformer, x, mask, train=False)
    np.testing.assert_allclose(p_out["task_language"].tokens, y[:, :3], atol=1e-6)
    pos = 3
    for t in range(W):
        for s in STEP:
            got = s_out[s.name].tokens[:, t]
            np.testing.assert_allclose(got, y[:, pos : pos + s.num_tokens], atol=1e-6)
            pos += s.num_tokens
    for s in STEP:
        assert s_out[s.name].tokens.shape == step[s.name].tokens.shape


def test_readout_inputs_do_not_affect_other_tokens(block_apply):
    prefix, step = make_groups()
    p0, s0 = block_apply(prefix, step, ALL_VALID)
    p1, s1 = block_apply(prefix, perturb(step, "readout_action", np.s_[:, :]), ALL_VALID)
    assert close(p0["task_language"].tokens, p1["task_language"].tokens)
    for name in ("obs_a", "obs_b", "readout_value"):
        assert close(s0[name].tokens, s1[name].tokens), name
    assert differ(s0["readout_action"].tokens, s1["readout_action"].tokens)


def test_future_observations_do_not_affect_the_past(block_apply):
    prefix, step = make_groups()
    p0, s0 = block_apply(prefix, step, ALL_VALID)
    p1, s1 = block_apply(prefix, perturb(step, "obs_b", np.s_[:, 2]), ALL_VALID)
    assert close(p0["task_language"].tokens, p1["task_language"].tokens)
    for name in ("obs_a", "obs_b", "readout_action"):
        assert close(s0[name].tokens[:, :2], s1[name].tokens[:, :2]), name
        assert differ(s0[name].tokens[:, 2], s1[name].tokens[:, 2]), name


def test_readouts_see_current_and_past_observations_and_the_task(block_apply):
    prefix, step = make_groups()
    _, s0 = block_apply(prefix, step, ALL_VALID)
    _, s1 = block_apply(prefix, perturb(step, "obs_a", np.s_[:, 0]), ALL_VALID)
    for t in range(W):
        assert differ(s0["readout_action"].tokens[:, t], s1["readout_action"].tokens[:, t])
    task_changed = perturb(prefix, "task_language", np.s_[:, 0])
    _, s2 = block_apply(task_changed, step, ALL_VALID)
    for name in ("obs_a", "readout_action"):
        assert differ(s0[name].tokens, s2[name].tokens)


def test_padded_tokens_have_no_effect(block_apply):
    prefix, step = make_groups()
    mask_b = step["obs_b"].mask.at[0, 1].set(False).at[1, :, 1].set(False)
    mask_t = prefix["task_language"].mask.at[1, 0].set(False)
    step["obs_b"] = TokenGroup(step["obs_b"].tokens, mask_b)
    prefix["task_language"] = TokenGroup(prefix["task_language"].tokens, mask_t)
    p0, s0 = block_apply(prefix, step, ALL_VALID)
    noisy_step = dict(step)
    noise = 50 * jax.random.normal(jax.random.key(9), step["obs_b"].tokens.shape)
    noisy_step["obs_b"] = TokenGroup(
        jnp.where(mask_b[..., None], step["obs_b"].tokens, noise), mask_b
    )
    t_noise = 30 * jax.random.normal(jax.random.key(8), prefix["task_language"].tokens.shape)
    noisy_prefix = {
        "task_language": TokenGroup(
            jnp.where(mask_t[..., None], prefix["task_language"].tokens, t_noise), mask_t
        )
    }
    p1, s1 = block_apply(noisy_prefix, noisy_step, ALL_VALID)
    for out0, out1 in ((p0, p1), (s0, s1)):
        for name, g in out0.items():
            valid = np.asarray(g.mask)
            assert valid.any()
            a, b = np.asarray(g.tokens)[valid], np.asarray(out1[name].tokens)[valid]
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=name)
    # control: the same noise on unpadded tokens does change the outputs
    unmask = lambda g: TokenGroup(g.tokens, jnp.ones_like(g.mask))
    _, c0 = block_apply(prefix, {k: unmask(v) for k, v in step.items()}, ALL_VALID)
    _, c1 = block_apply(noisy_prefix, {k: unmask(v) for k, v in noisy_step.items()}, ALL_VALID)
    assert differ(c0["obs_a"].tokens, c1["obs_a"].tokens)


def test_padded_timesteps_have_no_effect(block_apply):
    prefix, step = make_groups()
    pad = ALL_VALID.at[0, 0].set(False)  # example 0 starts at t=1 (episode start padding)
    p0, s0 = block_apply(prefix, step, pad)
    changed = step
    for name in step:
        changed = perturb(changed, name, np.s_[0, 0])
    p1, s1 = block_apply(prefix, changed, pad)
    assert close(p0["task_language"].tokens, p1["task_language"].tokens)
    for name in step:
        assert not s0[name].mask[0, 0].any(), "masks include timestep_pad_mask"
        assert s0[name].mask[0, 1:].all()
        assert close(s0[name].tokens[0, 1:], s1[name].tokens[0, 1:]), name
        assert close(s0[name].tokens[1], s1[name].tokens[1]), name
    # control: unpadded, the same change reaches later timesteps
    _, c0 = block_apply(prefix, step, ALL_VALID)
    _, c1 = block_apply(prefix, changed, ALL_VALID)
    assert differ(c0["readout_action"].tokens[0, 1:], c1["readout_action"].tokens[0, 1:])


def test_no_nan_when_groups_or_timesteps_are_fully_padded(block_apply):
    prefix, step = make_groups()
    prefix["task_language"] = TokenGroup(prefix["task_language"].tokens, jnp.zeros((B, 3), bool))
    step["obs_a"] = TokenGroup(step["obs_a"].tokens, jnp.zeros((B, W, 4), bool))
    pad = ALL_VALID.at[1].set(False)  # example 1: every timestep padded
    p, s = block_apply(prefix, step, pad)
    for g in [*p.values(), *s.values()]:
        assert np.isfinite(np.asarray(g.tokens)).all()


def test_jit_with_specs_as_static_argument():
    model = BlockTransformer(TINY, rngs=nnx.Rngs(3))
    prefix, step = make_groups()

    @nnx.jit(static_argnames="specs")
    def run(model, prefix, step, specs):
        return model(prefix, step, specs, timestep_pad_mask=ALL_VALID, train=False)

    _, s = run(model, prefix, step, SPECS)
    assert s["readout_action"].tokens.shape == (B, W, 1, D)


def test_block_transformer_validation():
    model = BlockTransformer(TINY, rngs=nnx.Rngs(3))
    prefix, step = make_groups()
    call = lambda p, s: model(p, s, SPECS, timestep_pad_mask=ALL_VALID, train=False)
    missing = {k: v for k, v in step.items() if k != "obs_b"}
    with pytest.raises(ValueError, match="obs_b"):
        call(prefix, missing)
    with pytest.raises(ValueError, match="extra_group"):
        call({**prefix, "extra_group": prefix["task_language"]}, step)
    short = dict(
        step, obs_a=TokenGroup(step["obs_a"].tokens[:, :, :3], step["obs_a"].mask[..., :3])
    )
    with pytest.raises(ValueError, match=r"'obs_a'.*\(2, 3, 4, 32\)"):
        call(prefix, short)
    narrow = {
        "task_language": TokenGroup(
            prefix["task_language"].tokens[..., :16], prefix["task_language"].mask
        )
    }
    with pytest.raises(ValueError, match=r"'task_language'.*\(2, 3, 32\)"):
        call(narrow, step)
    bad_mask = dict(step, obs_a=TokenGroup(step["obs_a"].tokens, step["obs_a"].mask[..., 0]))
    with pytest.raises(ValueError, match="'obs_a' mask"):
        call(prefix, bad_mask)

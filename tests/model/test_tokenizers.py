"""Image and proprio tokenizers: shapes, parameter counts, masks, goal fusion, FiLM, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from octo_like.model.tokenizers import (
    FiLM,
    ImageTokenizer,
    PatchEncoder,
    ProprioTokenizer,
    SmallStem16,
    normalize_image,
)
from octo_like.model.transformer import count_params


def stem_params(in_channels, features=(32, 96, 192, 384), num_features=512, patch_kernel=1):
    total, c_in = 0, in_channels
    for c in features:
        total += 3 * 3 * c_in * c + c  # conv kernel + bias
        total += 2 * c  # GroupNorm scale + bias
        c_in = c
    return total + patch_kernel**2 * c_in * num_features + num_features


def images(shape, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, 256, jnp.int32).astype(jnp.uint8)


def batch(b=2, w=2, size=32, camera="primary", seed=0):
    key = f"image_{camera}"
    obs = {key: images((b, w, size, size, 3), seed), "pad_mask_dict": {key: jnp.ones((b, w), bool)}}
    tasks = {
        key: images((b, size, size, 3), seed + 1),
        "pad_mask_dict": {key: jnp.ones((b,), bool)},
    }
    return obs, tasks


@pytest.mark.parametrize("size,grid", [(256, 16), (128, 8)])
def test_small_stem_output_shapes(size, grid):
    stem = SmallStem16(3, rngs=nnx.Rngs(0))
    x = normalize_image(images((1, size, size, 3)))
    y = nnx.jit(lambda m, x: m(x))(stem, x)
    assert y.shape == (1, grid, grid, 512)
    assert np.isfinite(np.asarray(y)).all()


def test_small_stem_parameter_count():
    assert count_params(nnx.eval_shape(lambda: SmallStem16(3, rngs=nnx.Rngs(0)))) == stem_params(3)
    assert stem_params(3) == 1_057_184
    fused = nnx.eval_shape(lambda: ImageTokenizer("p", goal_fusion=True, rngs=nnx.Rngs(0)))
    assert count_params(fused) == stem_params(6)
    assert fused.encoder.convs[0].kernel.shape == (3, 3, 6, 32), "goal fusion: 6 input channels"
    patch = nnx.eval_shape(lambda: PatchEncoder(3, num_features=64, rngs=nnx.Rngs(0)))
    assert count_params(patch) == 16 * 16 * 3 * 64 + 64


@pytest.mark.parametrize("patch,convs,kernel", [(4, 2, 1), (8, 3, 1), (16, 4, 1), (32, 4, 2)])
def test_patch_size_sets_the_token_grid_and_the_stem_depth(patch, convs, kernel):
    """A patch of P keeps log2(P) stride-2 convs (at most four, then a wider patch conv): a
    64 px image gets (64 / P)^2 tokens."""
    tok = ImageTokenizer("primary", num_features=32, patch_size=patch, rngs=nnx.Rngs(0))
    assert len(tok.encoder.convs) == convs
    assert tok.encoder.patch.kernel.shape[:2] == (kernel, kernel)
    widths = (32, 96, 192, 384)[:convs]
    assert count_params(tok) == stem_params(3, widths, num_features=32, patch_kernel=kernel)
    obs, tasks = batch(b=1, w=2, size=64)
    group = tok(obs, tasks)
    grid = 64 // patch
    assert group.tokens.shape == (1, 2, grid * grid, 32) and tok.num_tokens(64, 64) == grid**2
    single = tok.encoder(normalize_image(obs["image_primary"][0, 1])[None])
    assert single.shape == (1, grid, grid, 32)  # patches row-major, as with 16
    np.testing.assert_allclose(group.tokens[0, 1], single.reshape(grid * grid, 32), atol=1e-5)


def test_patch_size_errors_name_the_size():
    with pytest.raises(ValueError, match="patch_size must be one of"):
        ImageTokenizer("primary", patch_size=12, rngs=nnx.Rngs(0))
    tok = ImageTokenizer("primary", num_features=8, patch_size=8, rngs=nnx.Rngs(0))
    obs, tasks = batch(b=1, w=1, size=40)  # 40 = 5 patches of 8: fine
    assert tok(obs, tasks).tokens.shape == (1, 1, 25, 8)
    obs, tasks = batch(b=1, w=1, size=36)
    with pytest.raises(ValueError, match="multiples of 8, got 36x36"):
        tok(obs, tasks)


def test_observation_tokens_shape_mask_and_per_image_encoding():
    tok = ImageTokenizer("primary", num_features=64, rngs=nnx.Rngs(0))
    obs, tasks = batch()
    mask = jnp.array([[True, False], [True, True]])  # example 0 lacks the camera at t=1
    obs["pad_mask_dict"]["image_primary"] = mask
    group = tok(obs, tasks)
    assert group.tokens.shape == (2, 2, 4, 64) and group.mask.shape == (2, 2, 4)
    np.testing.assert_array_equal(group.mask, np.broadcast_to(mask[..., None], (2, 2, 4)))
    # each (example, step) is encoded on its own, patches row-major
    single = tok.encoder(normalize_image(obs["image_primary"][1, 0])[None])
    np.testing.assert_allclose(group.tokens[1, 0], single.reshape(4, 64), atol=1e-5)
    jitted = nnx.jit(lambda tok, obs, tasks: tok(obs, tasks))(tok, obs, tasks)
    np.testing.assert_allclose(jitted.tokens, group.tokens, atol=1e-5)
    np.testing.assert_array_equal(jitted.mask, group.mask)


def test_task_source_tokenizes_goal_images():
    tok = ImageTokenizer("wrist", num_features=32, source="task", rngs=nnx.Rngs(0))
    obs, tasks = batch(camera="wrist")
    tasks["pad_mask_dict"]["image_wrist"] = jnp.array([False, True])
    group = tok({}, tasks)
    assert group.tokens.shape == (2, 4, 32)
    np.testing.assert_array_equal(group.mask, [[False] * 4, [True] * 4])
    with pytest.raises(KeyError, match="image_wrist"):
        tok(obs, {"pad_mask_dict": tasks["pad_mask_dict"]})


def test_goal_fusion_uses_goal_and_zeroes_missing_goals():
    tok = ImageTokenizer("primary", num_features=16, goal_fusion=True, rngs=nnx.Rngs(0))
    obs, tasks = batch()
    base = tok(obs, tasks).tokens
    other_goal = dict(tasks, image_primary=images((2, 32, 32, 3), seed=7))
    assert np.abs(np.asarray(tok(obs, other_goal).tokens - base)).max() > 1e-3
    # a padded goal acts as a mid-grey (zero after normalization) goal, whatever its pixels
    padded = dict(tasks, pad_mask_dict={"image_primary": jnp.array([False, True])})
    grey = dict(tasks, image_primary=tasks["image_primary"].at[0].set(0))
    grey_out = tok(obs, dict(grey, pad_mask_dict=padded["pad_mask_dict"])).tokens
    padded_out = tok(obs, padded).tokens
    np.testing.assert_allclose(padded_out, grey_out, atol=1e-6)
    np.testing.assert_allclose(padded_out[1], base[1], atol=1e-6)
    zero_goal = jnp.concatenate(
        [normalize_image(obs["image_primary"][0, 0]), jnp.zeros((32, 32, 3))], axis=-1
    )
    expected = tok.encoder(zero_goal[None]).reshape(4, 16)
    np.testing.assert_allclose(padded_out[0, 0], expected, atol=1e-5)
    # the goal mask does not mask observation tokens
    assert tok(obs, padded).mask.all()
    with pytest.raises(KeyError, match="tasks lacks 'image_primary'"):
        tok(obs, {"pad_mask_dict": tasks["pad_mask_dict"]})


def _perturb_film(module) -> None:
    """Random FiLM projections (they start at zero: the identity), as after some training."""
    rng = np.random.default_rng(0)
    for path, param in nnx.iter_graph(module):
        if isinstance(param, nnx.Param) and any(p in ("scale", "shift") for p in path[-3:-1]):
            param.value = jnp.asarray(rng.normal(size=param.value.shape), param.value.dtype)


def test_film_identity_at_zero_condition_and_effect_otherwise():
    film = FiLM(8, 6, rngs=nnx.Rngs(0))
    _perturb_film(film)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    cond = jax.random.normal(jax.random.key(1), (2, 8))
    assert np.abs(np.asarray(film(x, cond) - x)).max() > 1e-3
    film.scale.bias.value = jnp.zeros_like(film.scale.bias.value)
    film.shift.bias.value = jnp.zeros_like(film.shift.bias.value)
    np.testing.assert_allclose(film(x, jnp.zeros((2, 8))), x, atol=1e-7)

    tok = ImageTokenizer("primary", num_features=16, film_dim=8, rngs=nnx.Rngs(0))
    _perturb_film(tok)
    obs, tasks = batch()
    a = tok(obs, tasks, film_condition=cond).tokens
    b = tok(obs, tasks, film_condition=cond.at[1].set(0.0)).tokens
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # per example
    assert np.abs(np.asarray(a[1] - b[1])).max() > 1e-3
    with pytest.raises(ValueError, match="film_condition"):
        tok(obs, tasks)
    with pytest.raises(ValueError, match="film_condition"):
        tok(obs, tasks, film_condition=cond[:1])
    patch = ImageTokenizer(
        "primary", encoder="patch16", num_features=16, film_dim=8, rngs=nnx.Rngs(0)
    )
    assert patch(obs, tasks, film_condition=cond).tokens.shape == (2, 2, 4, 16)


def test_bad_image_inputs_name_key_and_shape():
    tok = ImageTokenizer("wrist", num_features=16, rngs=nnx.Rngs(0))
    obs, tasks = batch(camera="primary")
    with pytest.raises(KeyError, match=r"'image_wrist'.*uint8\[b, w, h, w, 3\]"):
        tok(obs, tasks)
    obs, tasks = batch(camera="wrist")
    bad = dict(obs, image_wrist=obs["image_wrist"][:, 0])
    with pytest.raises(ValueError, match=r"image_wrist.*uint8\[b, w, h, w, 3\].*\[2, 32, 32, 3\]"):
        tok(bad, tasks)
    with pytest.raises(ValueError, match="image_wrist.*uint8"):
        tok(dict(obs, image_wrist=obs["image_wrist"].astype(jnp.float32)), tasks)
    with pytest.raises(ValueError, match="multiples of 16"):
        tok(dict(obs, image_wrist=obs["image_wrist"][:, :, :24]), tasks)
    with pytest.raises(KeyError, match=r"pad_mask_dict.image_wrist"):
        tok(dict(obs, pad_mask_dict={}), tasks)
    with pytest.raises(ValueError, match=r"pad_mask_dict.*image_wrist.*bool\[2, 2\]"):
        tok(dict(obs, pad_mask_dict={"image_wrist": jnp.ones((2,), bool)}), tasks)
    with pytest.raises(ValueError, match="unknown image encoder"):
        ImageTokenizer("wrist", encoder="resnet", rngs=nnx.Rngs(0))


def proprio_obs(b=2, w=3, p=4, seed=0):
    return {
        "proprio": jax.random.normal(jax.random.key(seed), (b, w, p)),
        "proprio_pad_mask": jnp.ones((b, w, p), bool).at[:, :, -1].set(False),
        "pad_mask_dict": {"proprio": jnp.ones((b, w), bool).at[0, 0].set(False)},
    }


def test_proprio_linear_mode():
    tok = ProprioTokenizer(4, mode="linear", num_features=8, rngs=nnx.Rngs(0))
    obs = proprio_obs()
    group = tok(obs)
    assert group.tokens.shape == (2, 3, 1, 8) and tok.num_tokens == 1
    expected = np.ones((2, 3, 1), bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(group.mask, expected)
    # values of padded dims never reach the tokens
    leaked = dict(obs, proprio=obs["proprio"].at[..., -1].set(1e3))
    np.testing.assert_allclose(tok(leaked).tokens, group.tokens, atol=1e-6)
    changed = dict(obs, proprio=obs["proprio"].at[..., 0].add(1.0))
    assert np.abs(np.asarray(tok(changed).tokens - group.tokens)).max() > 1e-3
    # no real dim at all -> the token is padding
    none_real = dict(obs, proprio_pad_mask=jnp.zeros((2, 3, 4), bool))
    assert not tok(none_real).mask.any()
    jitted = nnx.jit(lambda tok, obs: tok(obs))(tok, obs)
    np.testing.assert_allclose(jitted.tokens, group.tokens, atol=1e-6)


def test_proprio_per_dim_mode():
    tok = ProprioTokenizer(4, mode="per_dim", num_features=8, rngs=nnx.Rngs(0))
    obs = proprio_obs()
    group = tok(obs)
    assert group.tokens.shape == (2, 3, 4, 8) and tok.num_tokens == 4
    expected = np.ones((2, 3, 4), bool)
    expected[:, :, -1] = False
    expected[0, 0] = False
    np.testing.assert_array_equal(group.mask, expected)
    v = obs["proprio"][1, 2, 1]
    np.testing.assert_allclose(
        group.tokens[1, 2, 1], v * tok.weight[...][1] + tok.dim_embedding[...][1], atol=1e-6
    )
    # same value in two dims gives different tokens (the dim embedding tells them apart)
    same = dict(obs, proprio=jnp.zeros((2, 3, 4)))
    t = tok(same).tokens
    assert np.abs(np.asarray(t[1, 1, 0] - t[1, 1, 1])).max() > 1e-4


def test_proprio_bad_inputs():
    tok = ProprioTokenizer(4, num_features=8, rngs=nnx.Rngs(0))
    obs = proprio_obs()
    with pytest.raises(KeyError, match=r"'proprio'.*float32\[b, w, 4\]"):
        tok({k: v for k, v in obs.items() if k != "proprio"})
    with pytest.raises(ValueError, match=r"proprio.*float32\[b, w, 4\].*\[2, 3, 5\]"):
        tok(dict(obs, proprio=jnp.zeros((2, 3, 5))))
    with pytest.raises(KeyError, match="proprio_pad_mask"):
        tok({k: v for k, v in obs.items() if k != "proprio_pad_mask"})
    with pytest.raises(KeyError, match=r"pad_mask_dict.proprio"):
        tok(dict(obs, pad_mask_dict={}))
    with pytest.raises(ValueError, match=r"proprio_pad_mask.*bool\[2, 3, 4\]"):
        tok(dict(obs, proprio_pad_mask=jnp.ones((2, 3), bool)))
    with pytest.raises(ValueError, match="mode"):
        ProprioTokenizer(4, mode="tokens", num_features=8, rngs=nnx.Rngs(0))

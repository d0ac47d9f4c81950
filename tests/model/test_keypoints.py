"""Spatial-softmax keypoint tokens: where a keypoint lands, the tokens it adds, masks, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from octo_like.model.config import ImageTokenizerConfig
from octo_like.model.tokenizers import ImageTokenizer, SpatialSoftmaxKeypoints, normalize_image


def _one_hot_detector(module: SpatialSoftmaxKeypoints, channel: int) -> None:
    """Keypoint 0 scores a position by input channel `channel` alone, at a sharp temperature."""
    kernel = np.zeros(module.detect.kernel.shape, np.float32)
    kernel[0, 0, channel, 0] = 1.0
    module.detect.kernel[...] = jnp.asarray(kernel)
    module.detect.bias[...] = jnp.zeros_like(module.detect.bias[...])
    module.log_temperature[...] = jnp.asarray(np.log(0.01), jnp.float32)


def test_keypoint_lands_on_the_peak_to_a_fraction_of_a_cell():
    """A peak at row 3, column 12 of a 16x16 map is (x, y) = (12, 3) / 15 * 2 - 1; a peak split
    evenly between two neighbouring columns lands half-way, which a patch grid cannot say."""
    kp = SpatialSoftmaxKeypoints(4, 2, 8, rngs=nnx.Rngs(0))
    _one_hot_detector(kp, channel=2)
    x = np.zeros((2, 16, 16, 4), np.float32)
    x[0, 3, 12, 2] = 1.0
    x[1, 9, 5, 2] = x[1, 9, 6, 2] = 1.0
    xy = np.asarray(kp.expected_positions(jnp.asarray(x)))
    np.testing.assert_allclose(xy[0, 0], [12 / 15 * 2 - 1, 3 / 15 * 2 - 1], atol=1e-4)
    np.testing.assert_allclose(xy[1, 0], [5.5 / 15 * 2 - 1, 9 / 15 * 2 - 1], atol=1e-4)
    # a flat score map puts the keypoint at the centre
    flat = np.asarray(kp.expected_positions(jnp.zeros((1, 16, 16, 4))))
    np.testing.assert_allclose(flat[0], 0.0, atol=1e-6)


def test_keypoint_tokens_embed_each_position_with_its_own_weights():
    kp = SpatialSoftmaxKeypoints(4, 3, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
    tokens = kp(x)
    assert tokens.shape == (2, 3, 8) and tokens.dtype == jnp.float32
    xy = kp.expected_positions(x)
    want = np.einsum("bkd,kdf->bkf", xy, kp.embed[...]) + np.asarray(kp.bias[...])
    np.testing.assert_allclose(tokens, want, atol=1e-5)
    assert not np.allclose(kp.embed[...][0], kp.embed[...][1])
    assert kp(x.astype(jnp.bfloat16)).dtype == jnp.float32
    half = SpatialSoftmaxKeypoints(4, 3, 8, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert half(x).dtype == jnp.bfloat16


def test_tokenizer_appends_keypoints_after_the_patches_and_masks_them_alike():
    tok = ImageTokenizer("primary", num_features=16, keypoints=5, rngs=nnx.Rngs(0))
    plain = ImageTokenizer("primary", num_features=16, rngs=nnx.Rngs(0))
    assert tok.num_tokens(64, 64) == 16 + 5 and plain.num_tokens(64, 64) == 16
    key = "image_primary"
    images = jax.random.randint(jax.random.key(0), (2, 2, 64, 64, 3), 0, 256).astype(jnp.uint8)
    mask = jnp.array([[True, False], [True, True]])
    obs = {key: images, "pad_mask_dict": {key: mask}}
    group = nnx.jit(lambda t, o: t(o, {}))(tok, obs)
    assert group.tokens.shape == (2, 2, 21, 16)
    np.testing.assert_array_equal(group.mask, np.broadcast_to(mask[..., None], (2, 2, 21)))
    # the patch tokens are the plain stem's (same seed, same stem weights)
    np.testing.assert_allclose(group.tokens[:, :, :16], plain(obs, {}).tokens, atol=1e-4)
    frame = normalize_image(images[1, 0])[None]
    stride4 = tok.encoder.feature_maps(frame)[1]
    assert stride4.shape == (1, 16, 16, 96)  # read from the stem's second conv
    want = tok.keypoints(stride4)
    np.testing.assert_allclose(group.tokens[1, 0, 16:], want[0], atol=1e-4)
    # goal images (source="task") get keypoints too
    goal = ImageTokenizer("primary", num_features=16, keypoints=5, source="task", rngs=nnx.Rngs(0))
    tasks = {key: images[:, 0], "pad_mask_dict": {key: jnp.array([True, False])}}
    g = goal({}, tasks)
    assert g.tokens.shape == (2, 21, 16)
    np.testing.assert_array_equal(g.mask, [[True] * 21, [False] * 21])


def test_keypoint_gradients_reach_the_stem():
    tok = ImageTokenizer("primary", num_features=8, keypoints=2, rngs=nnx.Rngs(0))
    key = "image_primary"
    images = jax.random.randint(jax.random.key(0), (1, 1, 32, 32, 3), 0, 256).astype(jnp.uint8)
    obs = {key: images, "pad_mask_dict": {key: jnp.ones((1, 1), bool)}}

    def keypoint_sum(t):
        return t(obs, {}).tokens[:, :, -2:].sum()

    grads = nnx.grad(keypoint_sum)(tok)
    assert float(jnp.abs(grads.encoder.convs[0].kernel[...]).sum()) > 0
    assert float(jnp.abs(grads.keypoints.log_temperature[...])) > 0
    assert float(jnp.abs(grads.encoder.patch.kernel[...]).sum()) == 0  # patches not involved


def test_keypoint_settings_are_checked_and_named():
    with pytest.raises(ValueError, match="keypoints must be >= 0"):
        ImageTokenizer("primary", keypoints=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="encoder 'patch16' has none"):
        ImageTokenizer("primary", encoder="patch16", keypoints=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'wrist': keypoints must be an int >= 0"):
        ImageTokenizerConfig("wrist", keypoints=-2)
    with pytest.raises(ValueError, match="keypoints need the small_stem16 encoder"):
        ImageTokenizerConfig("primary", encoder="patch16", keypoints=8)
    with pytest.raises(ValueError, match="num_keypoints must be >= 1"):
        SpatialSoftmaxKeypoints(4, 0, 8, rngs=nnx.Rngs(0))

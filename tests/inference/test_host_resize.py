"""The host resize (numpy, no compiled program per size) equals `jax.image.resize`'s
antialiased bilinear resize to within one grey level, shrinking, enlarging and mixed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from octo_like.inference.host_resize import axis_weights, resize_uint8


def jax_reference(images: np.ndarray, size, method: str = "linear") -> np.ndarray:
    shape = (*images.shape[:-3], *size, images.shape[-1])
    out = jax.image.resize(jnp.asarray(images, jnp.float32), shape, method, antialias=True)
    return np.asarray(jnp.clip(jnp.floor(out + 0.5), 0, 255).astype(jnp.uint8))


@pytest.mark.parametrize(
    "source, size",
    [((40, 40), (32, 32)), ((480, 640), (256, 256)), ((20, 24), (32, 32)), ((17, 93), (32, 9)),
     ((3, 100), (50, 7))],
)  # fmt: skip
@pytest.mark.parametrize("method", ["linear", "lanczos3"])
def test_host_resize_matches_jax(source, size, method):
    """lanczos3 is Octo's (antialiased, as tf.image.resize and jax.image.resize compute it)."""
    images = np.random.default_rng(0).integers(0, 256, (2, *source, 3), dtype=np.uint8)
    ours = resize_uint8(images, size, method)
    assert ours.shape == (2, *size, 3) and ours.dtype == np.uint8
    difference = np.abs(ours.astype(int) - jax_reference(images, size, method).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_weights_are_normalized_rows_that_widen_when_shrinking():
    shrink, grow = axis_weights(64, 16), axis_weights(16, 64)
    np.testing.assert_allclose(shrink.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(grow.sum(axis=1), 1.0, rtol=1e-6)
    assert (shrink > 0).sum(axis=1)[1:-1].min() == 8  # a 4x shrink averages 8 inputs (edges 6)
    assert (grow > 0).sum(axis=1).max() <= 2  # enlarging interpolates two neighbours


@pytest.mark.parametrize(
    "source, size", [((48, 64), (32, 32)), ((32, 32), (32, 32)), ((20, 24), (40, 40))]
)
@pytest.mark.parametrize("crop_area", [None, 0.9])
def test_octo_evaluation_frames_match_octos_tensorflow_ops(source, size, crop_area):
    """An imported Octo model's frames: Octo's evaluation wrapper resizes with
    tf.image.resize(lanczos3, antialias) and centre-crops the primary camera with
    tf.image.crop_and_resize to the mean of its training crops, then rounds (here: TensorFlow
    as the reference, numpy in the product)."""
    import tensorflow as tf

    from octo_like.inference.host_resize import octo_eval_frames

    images = np.random.default_rng(1).integers(0, 256, (2, *source, 3), dtype=np.uint8)
    reference = tf.image.resize(images, size, method="lanczos3", antialias=True)
    if crop_area is not None:
        side = tf.sqrt(tf.constant(crop_area, tf.float32))
        start = (1 - side) / 2
        box = tf.stack([start, start, start + side, start + side])
        boxes = tf.tile(box[None], [len(images), 1])
        reference = tf.image.crop_and_resize(reference, boxes, tf.range(len(images)), size)
    reference = tf.cast(tf.clip_by_value(tf.round(reference), 0, 255), tf.uint8).numpy()
    ours = octo_eval_frames(images, size, crop_area)
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.02

"""Spatial-softmax keypoints: a feature map -> K (x, y) positions -> K tokens.

Patch tokens place what they see only to their patch (16 px of a 64 px image); the softmax
expectation over a finer map places a small target (a 2-3 px goal marker) to a fraction of a
pixel, which is what the last centimetres of a reach need. The readout is the one visuomotor
policies have used since end-to-end training of deep visuomotor policies (Levine et al., 2016).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision


class SpatialSoftmaxKeypoints(nnx.Module):
    """float[B, h, w, C] -> float[B, K, F]: K keypoints, each token embedding (x, y) in [-1, 1].

    A 1x1 conv scores every position for each keypoint; a softmax over positions (learned
    temperature, computed in float32) turns the scores into a distribution whose mean (x, y) is
    the keypoint. Keypoint k's token is ``x * W[k, 0] + y * W[k, 1] + b[k]``, so each keypoint
    has its own embedding and the transformer can tell them apart.
    """

    def __init__(
        self,
        in_features: int,
        num_keypoints: int,
        num_features: int,
        *,
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        if num_keypoints < 1:
            raise ValueError(
                f"SpatialSoftmaxKeypoints: num_keypoints must be >= 1, got {num_keypoints}"
            )
        self.dtype = dtype
        self.detect = precision.Conv(in_features, num_keypoints, (1, 1), dtype=dtype, rngs=rngs)
        self.log_temperature = nnx.Param(jnp.zeros(()))
        init = nnx.initializers.normal(1.0)
        self.embed = nnx.Param(init(rngs.params(), (num_keypoints, 2, num_features)))
        self.bias = nnx.Param(init(rngs.params(), (num_keypoints, num_features)) * 0.02)

    def expected_positions(self, x: jax.Array) -> jax.Array:
        """float[B, h, w, C] -> float32[B, K, 2]: each keypoint's mean (x, y); -1 is the
        left/top pixel centre, +1 the right/bottom one."""
        scores = self.detect(x).astype(jnp.float32)
        b, h, w, k = scores.shape
        scores = scores.reshape(b, h * w, k) * jnp.exp(-self.log_temperature[...])
        weights = jax.nn.softmax(scores, axis=1)
        ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
        grid = jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)  # [h*w, 2] as (x, y)
        return jnp.einsum("bnk,nd->bkd", weights, grid)

    def __call__(self, x: jax.Array) -> jax.Array:
        xy = self.expected_positions(x)
        tokens = jnp.einsum("bkd,kdf->bkf", xy, self.embed[...]) + self.bias[...]
        return tokens.astype(self.dtype or jnp.float32)

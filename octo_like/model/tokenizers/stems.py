"""Conv stems an `ImageTokenizer` encodes images with: ``float[B, H, W, C]`` in [-1, 1] ->
``float[B, H/P, W/P, F]``, one feature vector per P x P patch (P = 16 by default).

- `SmallStem16`: four 3x3 stride-2 convs (32, 96, 192, 384 features), each followed by
  GroupNorm(32) + ReLU (+ optional FiLM), then a patch conv to F features. A few cheap convs
  before patchifying work better than a bare patchify on small robot datasets. Patches smaller
  than 16 keep the first log2(P) convs (P = 8: 32, 96, 192), so a small image still gets a fine
  token grid (64 px: 8x8 tokens instead of 4x4) for less stem compute.
- `PatchEncoder`: a plain P x P patchify conv (ViT style).

Both take an optional FiLM condition (`FiLM`: the instruction modulating every stage).
`IMAGE_ENCODERS` names them for the config. Kept apart from `image.py`, which reads cameras out
of the batch and checks them: the stems know nothing of batches, cameras or masks.

``dtype`` is the compute dtype of every conv, norm output and FiLM (parameters stay float32;
GroupNorm statistics and the weight standardization are computed in float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision

PATCH = 16  # default patch side (Octo's)
STEM_FEATURES = (32, 96, 192, 384)  # SmallStem16's stride-2 conv widths
PATCH_SIZES = (4, 8, 16, 32)


def stem_features(patch_size: int) -> tuple[int, ...]:
    """SmallStem16's conv widths for a patch side: one stride-2 conv per halving, at most four."""
    if patch_size not in PATCH_SIZES:
        raise ValueError(f"patch_size must be one of {PATCH_SIZES}, got {patch_size}")
    return STEM_FEATURES[: min(len(STEM_FEATURES), patch_size.bit_length() - 1)]


class FiLM(nnx.Module):
    """Feature-wise modulation ``x * (1 + scale(c)) + shift(c)`` per channel.

    Both projections start at zero (kernels and biases), so a FiLM-conditioned stem starts as
    the plain stem whatever the condition, and learns how much the instruction should modulate.
    """

    def __init__(self, condition_dim: int, num_channels: int, *, rngs: nnx.Rngs, dtype: Any = None):
        zeros = nnx.initializers.zeros_init()
        self.scale = precision.Linear(
            condition_dim, num_channels, dtype=dtype, kernel_init=zeros, rngs=rngs
        )
        self.shift = precision.Linear(
            condition_dim, num_channels, dtype=dtype, kernel_init=zeros, rngs=rngs
        )

    def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
        """x: float[B, H, W, C]; condition: float[B, d_c] -> float[B, H, W, C]."""
        scale = self.scale(condition)[:, None, None, :]
        shift = self.shift(condition)[:, None, None, :]
        return (x * (1.0 + scale) + shift).astype(x.dtype)


STANDARDIZATIONS = ("rsqrt_variance", "std_plus_eps")


def standardize(w: jax.Array, kind: str) -> jax.Array:
    """A conv kernel float[kh, kw, in, out] standardized per output channel.

    "rsqrt_variance": (w - mean) * rsqrt(var + 1e-5), smooth as the variance goes to zero;
    "std_plus_eps": (w - mean) / (std + 1e-5), Octo's (equal while the variance is large).
    """
    w = w - w.mean(axis=(0, 1, 2), keepdims=True)
    if kind == "std_plus_eps":
        return w / (jnp.std(w, axis=(0, 1, 2), keepdims=True) + 1e-5)
    return w * jax.lax.rsqrt(jnp.mean(jnp.square(w), axis=(0, 1, 2), keepdims=True) + 1e-5)


class StdConv(nnx.Module):
    """Conv whose kernel is standardized per output channel (pairs well with GroupNorm)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        stride: int,
        *,
        rngs,
        dtype: Any = None,
        standardization: str = "rsqrt_variance",
    ):
        if standardization not in STANDARDIZATIONS:
            raise ValueError(
                f"StdConv: standardization must be one of {STANDARDIZATIONS}, "
                f"got {standardization!r}"
            )
        init = nnx.initializers.lecun_normal()
        self.dtype = dtype
        self.standardization = standardization
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.stride = stride
        self.padding = (kernel - 1) // 2

    def __call__(self, x: jax.Array) -> jax.Array:
        w = standardize(self.kernel[...], self.standardization)
        dtype = self.dtype or jnp.result_type(x, w)
        pad = ((self.padding, self.padding),) * 2
        y = precision.conv(  # the float32 kernel's gradient is reduced in float32
            x.astype(dtype),
            w,
            window_strides=(self.stride,) * 2,
            padding=pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return precision.add_param(y, self.bias[...])


class SmallStem16(nnx.Module):
    """Conv stem + patch conv: float[B, H, W, C] -> float[B, H/P, W/P, num_features].
    `features`: the stride-2 conv widths (default: `stem_features(patch_size)`)."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_features: int = 512,
        features: Sequence[int] | None = None,
        patch_size: int = PATCH,
        film_dim: int | None = None,
        rngs: nnx.Rngs,
        dtype: Any = None,
        standardization: str = "rsqrt_variance",
    ):
        features = stem_features(patch_size) if features is None else tuple(features)
        stride = 2 ** len(features)
        if patch_size % stride:
            raise ValueError(f"SmallStem16: patch_size {patch_size} must be a multiple of {stride}")
        self.patch_size = patch_size
        channels = [in_channels, *features]
        self.convs = nnx.List(
            [
                StdConv(ci, co, 3, 2, rngs=rngs, dtype=dtype, standardization=standardization)
                for ci, co in zip(channels, features, strict=False)
            ]
        )
        self.norms = nnx.List(
            [precision.GroupNorm(c, num_groups=32, dtype=dtype, rngs=rngs) for c in features]
        )
        self.films = nnx.List(
            [FiLM(film_dim, c, rngs=rngs, dtype=dtype) for c in features]
            if film_dim is not None
            else []
        )
        k = patch_size // stride
        self.patch = precision.Conv(
            features[-1],
            num_features,
            (k, k),
            strides=(k, k),
            padding="VALID",
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, film_condition: jax.Array | None = None) -> jax.Array:
        return self.patch(self.feature_maps(x, film_condition)[-1])

    def feature_maps(
        self, x: jax.Array, film_condition: jax.Array | None = None
    ) -> list[jax.Array]:
        """Each stride-2 conv's output: float[B, H/2^i, W/2^i, features[i-1]], i = 1, 2, ..."""
        _check_film(self.films, film_condition, x.shape[0], "SmallStem16")
        maps = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = jax.nn.relu(norm(conv(x)))
            if self.films:
                x = self.films[i](x, film_condition)
            maps.append(x)
        return maps


class PatchEncoder(nnx.Module):
    """Plain patchify conv: float[B, H, W, C] -> float[B, H/P, W/P, num_features]."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_features: int = 512,
        patch_size: int = PATCH,
        film_dim: int | None = None,
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        self.patch_size = patch_size
        p = (patch_size, patch_size)
        self.patch = precision.Conv(
            in_channels, num_features, p, strides=p, padding="VALID", dtype=dtype, rngs=rngs
        )
        self.films = nnx.List(
            [FiLM(film_dim, num_features, rngs=rngs, dtype=dtype)] if film_dim is not None else []
        )

    def __call__(self, x: jax.Array, film_condition: jax.Array | None = None) -> jax.Array:
        _check_film(self.films, film_condition, x.shape[0], "PatchEncoder")
        x = self.patch(x)
        return self.films[0](x, film_condition) if self.films else x


def _check_film(films, condition, batch: int, who: str) -> None:
    if films and condition is None:
        raise ValueError(f"{who}: built with FiLM, so film_condition float[b, d_c] is required")
    if not films and condition is not None:
        raise ValueError(f"{who}: film_condition given but the encoder was built without FiLM")
    if condition is not None and (condition.ndim != 2 or condition.shape[0] != batch):
        raise ValueError(
            f"{who}: film_condition must be float[{batch}, d_c], got {condition.shape}"
        )


IMAGE_ENCODERS: Mapping[str, type[nnx.Module]] = MappingProxyType(
    {"small_stem16": SmallStem16, "patch16": PatchEncoder}
)

"""Image tokenizers: uint8 camera frames -> one token per P x P patch (P = 16 by default).

Encoders map ``float[B, H, W, C]`` in [-1, 1] to ``float[B, H/P, W/P, F]``:

- `SmallStem16`: four 3x3 stride-2 convs (32, 96, 192, 384 features), each followed by
  GroupNorm(32) + ReLU (+ optional FiLM), then a patch conv to F features. A few cheap convs
  before patchifying work better than a bare patchify on small robot datasets. Patches smaller
  than 16 keep the first log2(P) convs (P = 8: 32, 96, 192), so a small image still gets a fine
  token grid (64 px: 8x8 tokens instead of 4x4) for less stem compute.
- `PatchEncoder`: a plain P x P patchify conv (ViT style).
- `SpatialSoftmaxKeypoints` (optional, `keypoints=K` on a `SmallStem16`): K learned keypoints
  read from the stem's stride-4 map, each the softmax-weighted mean (x, y) of one detector
  channel, appended as K tokens. A 4x4 grid of 16 px patches places a 2-3 px goal marker only to
  its patch; a keypoint's expectation places it to a fraction of a pixel (the spatial-softmax
  readout robot-learning codebases use for precise visuomotor control).

`ImageTokenizer` reads one camera from the batch (layout in `octo_like/schema.py`), either
observation frames (optionally with the goal image stacked on the channel axis: early goal
fusion) or, with ``source="task"``, the goal image alone as a task token group.

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
from octo_like.model.tokenizers.keypoints import SpatialSoftmaxKeypoints
from octo_like.model.tokens import TokenGroup
from octo_like.schema import PAD_MASK_DICT, image_key

PATCH = 16  # default patch side (Octo's)
STEM_FEATURES = (32, 96, 192, 384)  # SmallStem16's stride-2 conv widths
PATCH_SIZES = (4, 8, 16, 32)
KEYPOINT_STRIDE = 4  # keypoints are read from the stem's second conv (a 64 px image: 16x16)
KEYPOINT_MAP = KEYPOINT_STRIDE.bit_length() - 2  # that conv's index in `SmallStem16.feature_maps`


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


def normalize_image(image: jax.Array, dtype: Any = None) -> jax.Array:
    """uint8[...] -> float[...] in [-1, 1] (float32 arithmetic, then `dtype`, default float32)."""
    return (image.astype(jnp.float32) / 127.5 - 1.0).astype(dtype or jnp.float32)


def _get(tree: Mapping, path: tuple[str, ...], where: str, expected: str):
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(f"{where} lacks {'.'.join(path[: i + 1])!r}; expected {expected}")
        node = node[key]
    return node


def _check_image(image, name: str, shape: tuple, channels: int, patch: int) -> None:
    """shape: expected leading dims (None = any), image must be uint8[*shape, h, w, channels]
    with h and w multiples of the patch side."""
    want = f"uint8[{', '.join(['b', 'w'][: len(shape)])}, h, w, {channels}]"
    ok = (
        image.ndim == len(shape) + 3
        and all(s is None or s == d for s, d in zip(shape, image.shape, strict=False))
        and image.shape[-1] == channels
        and image.dtype == jnp.uint8
    )
    if not ok:
        raise ValueError(f"{name} must be {want}, got {image.dtype}{list(image.shape)}")
    h, w = image.shape[-3:-1]
    if h % patch or w % patch:
        raise ValueError(f"{name}: height and width must be multiples of {patch}, got {h}x{w}")


def _check_mask(mask, name: str, shape: tuple[int, ...]) -> None:
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must be bool{list(shape)}, got shape {list(mask.shape)}")


class ImageTokenizer(nnx.Module):
    """One camera -> TokenGroup of float[b, w, n, F] (observation) or float[b, n, F] (task).

    source="observation": reads ``observations["image_<camera>"]`` uint8[b, w, h, w, C]; token
    mask = ``observations["pad_mask_dict"]["image_<camera>"]`` bool[b, w] broadcast over
    patches. With goal_fusion, ``tasks["image_<camera>"]`` uint8[b, h, w, C] is stacked on the
    channel axis of every window step; a goal whose ``tasks["pad_mask_dict"]`` entry is False is
    replaced by zeros after normalization (mid-grey), whatever its pixels hold, and does not
    mask the observation tokens.
    source="task": reads the goal image alone; mask from ``tasks["pad_mask_dict"]``, bool[b].
    keypoints=K (small_stem16 only): K spatial-softmax keypoint tokens follow the patch tokens
    of every image (n = patches + K), masked like them.
    """

    def __init__(
        self,
        camera: str,
        *,
        encoder: str = "small_stem16",
        num_features: int = 512,
        goal_fusion: bool = False,
        film_dim: int | None = None,
        in_channels: int = 3,
        source: str = "observation",
        patch_size: int = PATCH,
        keypoints: int = 0,
        stem_widths: Sequence[int] | None = None,
        stem_standardization: str = "rsqrt_variance",
        goal_padding: str = "grey",
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        if encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"unknown image encoder {encoder!r}; choose from {list(IMAGE_ENCODERS)}"
            )
        if source not in ("observation", "task"):
            raise ValueError(f"source must be 'observation' or 'task', got {source!r}")
        if goal_fusion and source == "task":
            raise ValueError("goal_fusion applies to observation tokenizers, not source='task'")
        self.camera = camera
        self.key = image_key(camera)
        self.source = source
        self.goal_fusion = goal_fusion
        if goal_padding not in ("grey", "pixels"):
            raise ValueError(f"goal_padding must be 'grey' or 'pixels', got {goal_padding!r}")
        self.goal_padding = goal_padding
        self.in_channels = in_channels
        self.num_features = num_features
        self.dtype = dtype
        default_widths = stem_features(patch_size)  # validates the patch side
        self.patch_size = patch_size
        encoder_channels = in_channels * (2 if goal_fusion else 1)
        stem_options = (
            dict(
                features=default_widths if stem_widths is None else tuple(stem_widths),
                standardization=stem_standardization,
            )
            if encoder == "small_stem16"
            else {}
        )
        self.encoder = IMAGE_ENCODERS[encoder](
            encoder_channels,
            num_features=num_features,
            patch_size=patch_size,
            film_dim=film_dim,
            rngs=rngs,
            dtype=dtype,
            **stem_options,
        )
        if keypoints < 0:
            raise ValueError(f"ImageTokenizer({camera!r}): keypoints must be >= 0, got {keypoints}")
        if keypoints and encoder != "small_stem16":
            raise ValueError(
                f"ImageTokenizer({camera!r}): keypoints read the small_stem16 stem's feature "
                f"maps; encoder {encoder!r} has none"
            )
        self.num_keypoints = keypoints
        self.keypoints = (
            SpatialSoftmaxKeypoints(
                self.encoder.convs[KEYPOINT_MAP].kernel.shape[-1],
                keypoints,
                num_features,
                rngs=rngs,
                dtype=dtype,
            )
            if keypoints
            else None
        )

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens per image of this size: one per patch, then the keypoints."""
        return (height // self.patch_size) * (width // self.patch_size) + self.num_keypoints

    def _encode(self, x: jax.Array, film_condition: jax.Array | None) -> jax.Array:
        """float[B, H, W, C'] -> float[B, n, F]: patch tokens row-major, then keypoint tokens."""
        if self.keypoints is None:
            tokens = self.encoder(x, film_condition)
            return tokens.reshape(x.shape[0], -1, tokens.shape[-1])
        maps = self.encoder.feature_maps(x, film_condition)
        patches = self.encoder.patch(maps[-1])
        patches = patches.reshape(x.shape[0], -1, patches.shape[-1])
        keypoints = self.keypoints(maps[KEYPOINT_MAP]).astype(patches.dtype)
        return jnp.concatenate([patches, keypoints], axis=1)

    def __call__(
        self,
        observations: Mapping,
        tasks: Mapping,
        *,
        film_condition: jax.Array | None = None,
        train: bool = False,
    ) -> TokenGroup:
        """`train` is accepted for a uniform tokenizer interface; encoding is deterministic."""
        del train
        if self.source == "task":
            return self._tokenize_goal(tasks, film_condition)
        c = self.in_channels
        where = f"ImageTokenizer({self.camera!r}): observations"
        image = _get(observations, (self.key,), where, f"uint8[b, w, h, w, {c}]")
        _check_image(image, f"observations[{self.key!r}]", (None, None), c, self.patch_size)
        b, w = image.shape[:2]
        mask = _get(observations, (PAD_MASK_DICT, self.key), where, f"bool[{b}, {w}]")
        _check_mask(mask, f"observations[{PAD_MASK_DICT!r}][{self.key!r}]", (b, w))

        x = normalize_image(image, self.dtype)
        if self.goal_fusion:
            goal = self._goal(tasks, b, image.shape[2:4])
            x = jnp.concatenate([x, jnp.broadcast_to(goal[:, None], x.shape)], axis=-1)
        cond = None if film_condition is None else jnp.repeat(film_condition, w, axis=0)
        tokens = self._encode(x.reshape(b * w, *x.shape[2:]), cond)
        tokens = tokens.reshape(b, w, -1, tokens.shape[-1])
        mask = jnp.broadcast_to(mask.astype(bool)[:, :, None], tokens.shape[:-1])
        return TokenGroup(tokens, mask)

    def _goal(self, tasks: Mapping, batch: int, hw: tuple[int, int]) -> jax.Array:
        """Normalized goal image float32[b, h, w, C], zeros where the goal is padding."""
        c = self.in_channels
        where = f"ImageTokenizer({self.camera!r}, goal_fusion): tasks"
        if self.goal_padding == "pixels" and self.key not in tasks:  # Octo: black, -1.0
            return jnp.full((batch, *hw, c), -1.0, self.dtype or jnp.float32)
        goal = _get(tasks, (self.key,), where, f"uint8[{batch}, {hw[0]}, {hw[1]}, {c}]")
        name = f"tasks[{self.key!r}]"
        _check_image(goal, name, (batch,), c, self.patch_size)
        if tuple(goal.shape[1:3]) != tuple(hw):
            raise ValueError(
                f"{name} must match the observation size {tuple(hw)}, got {goal.shape}"
            )
        if self.goal_padding == "pixels":
            return normalize_image(goal, self.dtype)
        mask = _get(tasks, (PAD_MASK_DICT, self.key), where, f"bool[{batch}]")
        _check_mask(mask, f"tasks[{PAD_MASK_DICT!r}][{self.key!r}]", (batch,))
        valid = mask.astype(bool)[:, None, None, None]
        return jnp.where(valid, normalize_image(goal, self.dtype), 0.0).astype(
            self.dtype or jnp.float32
        )

    def _tokenize_goal(self, tasks: Mapping, film_condition: jax.Array | None) -> TokenGroup:
        c = self.in_channels
        where = f"ImageTokenizer({self.camera!r}, source='task'): tasks"
        goal = _get(tasks, (self.key,), where, f"uint8[b, h, w, {c}]")
        _check_image(goal, f"tasks[{self.key!r}]", (None,), c, self.patch_size)
        b = goal.shape[0]
        mask = _get(tasks, (PAD_MASK_DICT, self.key), where, f"bool[{b}]")
        _check_mask(mask, f"tasks[{PAD_MASK_DICT!r}][{self.key!r}]", (b,))
        tokens = self._encode(normalize_image(goal, self.dtype), film_condition)
        return TokenGroup(tokens, jnp.broadcast_to(mask.astype(bool)[:, None], tokens.shape[:-1]))

"""Image tokenizers: uint8 camera frames -> one token per P x P patch (P = 16 by default).

`ImageTokenizer` reads one camera from the batch (layout in `octo_like/schema.py`), either
observation frames (optionally with the goal image stacked on the channel axis: early goal
fusion) or, with ``source="task"``, the goal image alone as a task token group, checks the
frames and masks, scales them to [-1, 1] and encodes them with one of the conv stems of
`stems.py` (`SmallStem16`, `PatchEncoder`: ``float[B, H, W, C]`` -> ``float[B, H/P, W/P, F]``).

`SpatialSoftmaxKeypoints` (optional, `keypoints=K` on a `SmallStem16`): K learned keypoints
read from the stem's stride-4 map, each the softmax-weighted mean (x, y) of one detector
channel, appended as K tokens. A 4x4 grid of 16 px patches places a 2-3 px goal marker only to
its patch; a keypoint's expectation places it to a fraction of a pixel (the spatial-softmax
readout robot-learning codebases use for precise visuomotor control).

``dtype`` is the compute dtype of the normalized frames, the stem (see `stems.py`) and the
keypoints; parameters stay float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model.tokenizers.keypoints import SpatialSoftmaxKeypoints
from octo_like.model.tokenizers.stems import IMAGE_ENCODERS, PATCH, stem_features
from octo_like.model.tokens import TokenGroup
from octo_like.schema import PAD_MASK_DICT, image_key

KEYPOINT_STRIDE = 4  # keypoints are read from the stem's second conv (a 64 px image: 16x16)
KEYPOINT_MAP = KEYPOINT_STRIDE.bit_length() - 2  # that conv's index in `SmallStem16.feature_maps`


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

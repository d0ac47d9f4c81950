"""What a robot sends -> what the network reads: the host-side half of `Policy.predict_chunks`.

Training feeds the model batches laid out as in `octo_like/schema.py` (stage 5), with
images resized per camera and proprio normalized (then zero-padded to the model's P). A robot
has raw frames of its own size and raw proprio, so `prepare_observations` redoes exactly those
steps with the checkpoint's statistics:

* images ``uint8[b, W, h, w, 3]`` of another size are resized with the same bilinear
  (antialiased when shrinking, half-pixel centres, rounded) resize as the eval-time pipeline;
* a camera the model has but the robot lacks is zero-filled and masked out (as camera dropout
  does in training); at least one camera or proprio must be given;
* proprio ``float32[b, W, P]`` (P = the dataset's own dimension) is normalized with the
  dataset's proprio statistics, zero-padded to the model's dimension and given a
  ``proprio_pad_mask``;
* missing masks are filled: ``timestep_pad_mask`` all True, ``pad_mask_dict[key]`` = the
  timestep mask.

Unknown keys are errors (a misspelled camera must not be silently zero-filled).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.inference.finite import check_finite, check_normalized_range
from octo_like.inference.host_resize import octo_eval_frames, resize_uint8
from octo_like.inference.request_fields import check_field_types
from octo_like.model.config import ModelConfig
from octo_like.normalization import ArrayStatistics, normalize_np
from octo_like.schema import (
    PAD_MASK_DICT,
    PROPRIO,
    PROPRIO_PAD_MASK,
    TIMESTEP,
    TIMESTEP_PAD_MASK,
    describe_keys,
    image_key,
)

# Beyond 8K video (7680 px): a frame this size is an error, and resizing a 12000x12000 one took
# 29 s and 11.4 GB before anything was said.
MAX_FRAME_SIDE = 8192


def resize_images(
    images: np.ndarray,
    size: tuple[int, int],
    method: str = "linear",
    crop_area: float | None = None,
) -> np.ndarray:
    """uint8[..., h, w, 3] -> uint8[..., size[0], size[1], 3]; a no-op when sizes match.

    Matches `octo_like.data.image_ops.resize` (tf.image.resize bilinear, antialiased when
    shrinking) to within one grey level, without TensorFlow, on the host: no program is
    compiled per input size (`host_resize.py`), so a new size never stalls the model thread.
    method "lanczos3": Octo's evaluation preprocessing (an imported Octo model's
    `frame_resize`), applied at every size, with its centred crop of `crop_area` (`host_resize.
    octo_eval_frames`).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [..., h, w, 3], got {images.dtype}{images.shape}")
    size = (int(size[0]), int(size[1]))
    if method == "lanczos3":
        return octo_eval_frames(images, size, crop_area)
    if tuple(images.shape[-3:-1]) == size:
        return images
    return resize_uint8(images, size, method)


def _crop_area(config: ModelConfig, key: str) -> float | None:
    """Octo's evaluation crop: the primary camera only (its training crops were random)."""
    return config.frame_crop_area if key == image_key("primary") else None


def _close(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def prepare_observations(
    observations: Mapping[str, Any],
    *,
    config: ModelConfig,
    input_spec: Mapping[str, Any],
    proprio_statistics: ArrayStatistics | None,
    normalization: str,
) -> dict[str, Any]:
    """A batched, windowed robot observation -> the network's observation dict.

    Input: ``image_<camera> uint8[b, W, h, w, 3]`` (any h, w), ``proprio float32[b, W, P]``,
    optional ``timestep_pad_mask bool[b, W]``, ``pad_mask_dict {key: bool[b, W]}``,
    ``proprio_pad_mask bool[b, W, P_model]``, ``timestep int[b, W]`` (ignored).
    `proprio_statistics`: the dataset's proprio statistics, None to pass proprio through.
    """
    check_field_types(observations, "observation")
    spec = input_spec["observation"]
    cameras = {image_key(c): c for c in config.cameras}
    known = {*cameras, PROPRIO, PROPRIO_PAD_MASK, TIMESTEP, TIMESTEP_PAD_MASK, PAD_MASK_DICT}
    for key in observations:
        if key not in known:
            raise ValueError(
                f"unknown observation key {key!r}{_close(key, known)}; the model reads "
                f"{sorted(cameras)}" + (f" and {PROPRIO!r}" if config.proprio else "")
            )
    given_masks = dict(observations.get(PAD_MASK_DICT) or {})
    batch, window = _batch_and_window(observations, config.window)
    if TIMESTEP_PAD_MASK in observations:
        timestep_pad_mask = _bool(
            observations[TIMESTEP_PAD_MASK], (batch, window), TIMESTEP_PAD_MASK
        )
    else:
        timestep_pad_mask = np.ones((batch, window), bool)
    empty = np.flatnonzero(~timestep_pad_mask.any(axis=1))
    if empty.size:
        raise ValueError(
            f"window(s) {empty.tolist()} of the batch have no valid timestep "
            f"({TIMESTEP_PAD_MASK} all False): there is nothing to act on"
        )

    out: dict[str, Any] = {TIMESTEP_PAD_MASK: timestep_pad_mask, PAD_MASK_DICT: {}}
    present_any = False
    for key in cameras:
        expected = tuple(spec[key]["shape"])  # (W, h, w, 3)
        if key not in observations:
            out[key] = np.zeros((batch, *expected), np.uint8)
            out[PAD_MASK_DICT][key] = np.zeros((batch, window), bool)
            continue
        images = np.asarray(observations[key])
        if (
            images.dtype != np.uint8
            or images.ndim != 5
            or images.shape[-1] != 3
            or images.shape[:2] != (batch, window)
        ):
            raise ValueError(
                f"observation {key!r} must be uint8[{batch}, {window}, h, w, 3], got "
                f"{images.dtype}{list(images.shape)}"
            )
        height, width = images.shape[2:4]
        if not (0 < height <= MAX_FRAME_SIDE and 0 < width <= MAX_FRAME_SIDE):
            raise ValueError(
                f"observation {key!r} frames are {height}x{width}: expected 1 to "
                f"{MAX_FRAME_SIDE} pixels a side (the model reads "
                f"{expected[1]}x{expected[2]}; an empty or a {height}x{width} frame is a "
                "camera or encoding error)"
            )
        out[key] = resize_images(
            images, expected[1:3], config.frame_resize, _crop_area(config, key)
        )
        out[PAD_MASK_DICT][key] = _mask(given_masks, key, timestep_pad_mask)
        present_any = True

    if config.proprio is not None:
        if PROPRIO not in observations:
            raise ValueError(
                f"the model reads {PROPRIO!r} float32[b, W, P]; the observation has none "
                f"(given keys: {describe_keys(observations)})"
            )
        _proprio(out, observations, spec, given_masks, proprio_statistics, normalization)
        present_any = True
    if not present_any:
        raise ValueError(f"observation has none of the model's cameras {sorted(cameras)}")
    return out


def _batch_and_window(observations: Mapping[str, Any], window: int) -> tuple[int, int]:
    for key in (TIMESTEP_PAD_MASK, PROPRIO, *sorted(observations)):
        if key in observations and key != PAD_MASK_DICT:
            shape = np.shape(observations[key])
            if len(shape) < 2:
                raise ValueError(
                    f"observation {key!r} has shape {list(shape)}; expected a batch and a "
                    f"window axis [b, W, ...]"
                )
            if shape[1] != window:
                raise ValueError(
                    f"observation {key!r} has window {shape[1]} (shape {list(shape)}); the "
                    f"model's window is {window}"
                )
            return int(shape[0]), int(shape[1])
    raise ValueError("observation is empty")


def _bool(value, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {list(array.shape)}, expected {list(shape)}")
    if array.dtype != bool:
        raise ValueError(f"{name} must be bool, got {array.dtype}")
    return array


def _mask(given: Mapping[str, Any], key: str, timestep_pad_mask: np.ndarray) -> np.ndarray:
    if key not in given:
        return timestep_pad_mask
    mask = _bool(given[key], timestep_pad_mask.shape, f"pad_mask_dict[{key!r}]")
    return mask & timestep_pad_mask


def _proprio(out, observations, spec, given_masks, statistics, normalization) -> None:
    proprio = np.asarray(observations[PROPRIO])
    batch, window = out[TIMESTEP_PAD_MASK].shape
    model_dim = spec[PROPRIO]["shape"][-1]
    if proprio.ndim != 3 or proprio.shape[:2] != (batch, window) or proprio.dtype.kind != "f":
        raise ValueError(
            f"observation {PROPRIO!r} must be float32[{batch}, {window}, P], got "
            f"{proprio.dtype}{list(proprio.shape)}"
        )
    dim = proprio.shape[-1]
    check_finite(f"observation {PROPRIO!r}", proprio)
    if statistics is not None:
        if dim != statistics.dim:
            raise ValueError(
                f"observation {PROPRIO!r} has {dim} dims; the dataset's proprio statistics "
                f"have {statistics.dim}"
            )
        raw = proprio
        with np.errstate(over="ignore"):  # float32 overflow becomes inf, caught just below
            proprio = normalize_np(proprio.astype(np.float32), statistics, normalization)
        check_finite(f"observation {PROPRIO!r} (normalized)", proprio)
        check_normalized_range(f"observation {PROPRIO!r}", proprio, raw)
    if dim > model_dim:
        raise ValueError(f"observation {PROPRIO!r} has {dim} dims; the model reads {model_dim}")
    padded = np.zeros((batch, window, model_dim), np.float32)
    padded[..., :dim] = proprio
    out[PROPRIO] = padded
    if PROPRIO_PAD_MASK in observations:
        out[PROPRIO_PAD_MASK] = _bool(
            observations[PROPRIO_PAD_MASK], (batch, window, model_dim), PROPRIO_PAD_MASK
        )
    else:
        real = np.arange(model_dim) < dim
        out[PROPRIO_PAD_MASK] = np.broadcast_to(real, (batch, window, model_dim)).copy()
    out[PAD_MASK_DICT][PROPRIO] = _mask(given_masks, PROPRIO, out[TIMESTEP_PAD_MASK])

"""Image resizing on the host, in numpy: no compiled program per image size.

A robot (or an abusive client) may send any image size. Resizing on the accelerator compiles a
program per input shape, seconds each on the one model thread, stalling every other client; a
separable resize is two small matrix products per image in numpy instead, at any size.

The arithmetic is `jax.image.resize(..., method, antialias=True)`'s (itself matching the
training pipeline's antialiased `tf.image.resize` to within a grey level): for each axis a
weight matrix of the kernel (triangle for "linear", Lanczos-3 for "lanczos3", Octo's), stretched
by the downscale factor when shrinking, sampled at the output pixel centres and normalized to
sum to 1.
"""

from __future__ import annotations

import functools

import numpy as np

_MIN_WEIGHT_SUM = 1000.0 * float(np.finfo(np.float32).eps)


RESIZE_METHODS = ("linear", "lanczos3")


def _kernel(x: np.ndarray, method: str) -> np.ndarray:
    """The resampling kernel at distances ``x >= 0`` (in input pixels / kernel scale)."""
    if method == "linear":
        return np.maximum(0.0, 1.0 - x)
    radius = 3.0  # lanczos3: 3 sin(pi x) sin(pi x / 3) / (pi x)^2, 1 at 0, 0 past 3
    with np.errstate(divide="ignore", invalid="ignore"):
        y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi**2 * x**2)
    return np.where(x > radius, 0.0, np.where(x > 1e-3, y, 1.0))


@functools.lru_cache(maxsize=256)
def axis_weights(input_size: int, output_size: int, method: str = "linear") -> np.ndarray:
    """float32[output_size, input_size]: row i holds the input weights of output pixel i."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    inv_scale = np.float32(input_size) / np.float32(output_size)
    kernel_scale = max(inv_scale, np.float32(1.0))
    sample = (np.arange(output_size, dtype=np.float32) + 0.5) * inv_scale - 0.5
    distance = np.abs(sample[:, None] - np.arange(input_size, dtype=np.float32)[None, :])
    weights = _kernel(distance / kernel_scale, method).astype(np.float32)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(total) > _MIN_WEIGHT_SUM, weights / np.where(total != 0, total, 1), 0)
    inside = (sample >= -0.5) & (sample <= input_size - 0.5)
    weights[~inside] = 0.0
    weights.setflags(write=False)
    return weights


def resize_uint8(images: np.ndarray, size: tuple[int, int], method: str = "linear") -> np.ndarray:
    """uint8[..., h, w, c] -> uint8[..., size[0], size[1], c], rounded half up and clipped.

    method: "linear" (the training pipeline's) or "lanczos3" (antialiased, Octo's examples and
    data pipeline: `tf.image.resize(..., "lanczos3", antialias=True)`)."""
    images = np.asarray(images)
    height, width = images.shape[-3:-1]
    rows = axis_weights(int(height), int(size[0]), method)  # [H, h]
    cols = axis_weights(int(width), int(size[1]), method)  # [W, w]
    pixels = images.astype(np.float32)
    resized = np.einsum("Hh,...hwc->...Hwc", rows, pixels, optimize=True)
    resized = np.einsum("Ww,...Hwc->...HWc", cols, resized, optimize=True)
    return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)


def resize_float(images: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """`resize_uint8` before rounding: float32[..., size[0], size[1], c]."""
    height, width = np.shape(images)[-3:-1]
    rows = axis_weights(int(height), int(size[0]), method)
    cols = axis_weights(int(width), int(size[1]), method)
    resized = np.einsum("Hh,...hwc->...Hwc", rows, np.asarray(images, np.float32), optimize=True)
    return np.einsum("Ww,...Hwc->...HWc", cols, resized, optimize=True)


def center_crop_resize(images: np.ndarray, area: float, size: tuple[int, int]) -> np.ndarray:
    """The centred crop holding `area` of the image (square-rooted per side, aspect kept),
    bilinearly resampled to `size` with `tf.image.crop_and_resize`'s sampling (corner to corner,
    no antialiasing): float[..., h, w, c] -> float32[..., size[0], size[1], c].

    Octo evaluates the primary camera so (area 0.9: the mean of its training crops)."""
    images = np.asarray(images, np.float32)
    side = np.float32(np.clip(np.sqrt(np.float32(area)), 0.0, 1.0))  # float32, as Octo's box
    start = (np.float32(1.0) - side) / np.float32(2.0)
    out = images
    for axis, (length, target) in enumerate(zip(images.shape[-3:-1], size, strict=True)):
        axis = images.ndim - 3 + axis
        if target > 1:
            step = side * np.float32(length - 1) / np.float32(target - 1)
            positions = start * np.float32(length - 1) + np.arange(target, dtype=np.float32) * step
        else:
            positions = np.array([(start + side / 2) * (length - 1)], np.float32)
        low = np.floor(positions).astype(int)
        high = np.minimum(low + 1, length - 1)
        frac = (positions - low).astype(np.float32)
        shape = [1] * images.ndim
        shape[axis] = target
        a, b = np.take(out, low, axis=axis), np.take(out, high, axis=axis)
        out = a + (b - a) * frac.reshape(shape)
    return out.astype(np.float32)


def octo_eval_frames(
    images: np.ndarray, size: tuple[int, int], crop_area: float | None
) -> np.ndarray:
    """Octo's evaluation preprocessing of a camera: antialiased Lanczos-3 resize to `size`,
    then (crop_area set, Octo: 0.9 on the primary camera) the centred mean-augmentation crop
    resized back, rounded half to even as `tf.round`, clipped to uint8."""
    frames = resize_float(images, size, "lanczos3")
    if crop_area is not None and crop_area < 1.0:
        frames = center_crop_resize(frames, crop_area, size)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)

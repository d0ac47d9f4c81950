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

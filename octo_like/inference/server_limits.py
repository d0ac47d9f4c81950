"""What the policy server accepts, checked before any model work: bounded memory and latency.

A request that passes `check_inference_request` holds at most `max_batch` windows of the
model's cameras (each image side in [`min_image_side`, `max_image_side`]), proprio only if the
model reads it, and one instruction (or one per window) of at most `max_instruction_chars`.
Batches are padded to the next of `batch_buckets`, so the server compiles at most
``len(batch_buckets)`` shapes whatever clients send. All limits go out in the metadata.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.inference.finite import check_finite
from octo_like.inference.request_fields import check_field_types
from octo_like.schema import (
    PAD_MASK_DICT,
    PROPRIO,
    PROPRIO_PAD_MASK,
    TIMESTEP,
    TIMESTEP_PAD_MASK,
    describe_keys,
)

IMAGE_PREFIX = "image_"


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one request may hold and on the work queued at once."""

    max_batch: int = 16
    batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16)
    min_image_side: int = 8
    max_image_side: int = 1024
    max_request_bytes: int = 32 * 2**20  # larger messages close the connection (code 1009)
    max_instruction_chars: int = 512
    max_queued: int = 8  # model requests waiting or running, all clients together
    # Open connections at once; with max_request_bytes, this bounds the bytes held in buffers.
    max_connections: int = 64
    # A message started but not finished within this many seconds closes its connection
    # (a client trickling bytes would otherwise hold a connection and its buffer forever).
    message_timeout_s: float = 30.0

    def __post_init__(self):
        buckets = tuple(int(b) for b in self.batch_buckets)
        object.__setattr__(self, "batch_buckets", buckets)
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"batch_buckets must be ascending positive sizes, got {buckets}")
        if buckets[-1] != self.max_batch:
            raise ValueError(
                f"the largest batch bucket ({buckets[-1]}) must be max_batch ({self.max_batch})"
            )
        if not 1 <= self.min_image_side <= self.max_image_side:
            raise ValueError(
                f"min_image_side ({self.min_image_side}) must be >= 1 and <= max_image_side "
                f"({self.max_image_side})"
            )
        if not self.message_timeout_s > 0:
            raise ValueError(f"message_timeout_s must be > 0, got {self.message_timeout_s}")
        for name in ("max_request_bytes", "max_instruction_chars", "max_queued", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def up_to(cls, max_batch: int, **kwargs: Any) -> ServerLimits:
        """Limits with buckets 1, 2, 4, ... up to `max_batch` (which ends the list)."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        buckets = [1]
        while buckets[-1] * 2 < max_batch:
            buckets.append(buckets[-1] * 2)
        if buckets[-1] != max_batch:
            buckets.append(max_batch)
        return cls(max_batch=max_batch, batch_buckets=tuple(buckets), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "batch_buckets": list(self.batch_buckets)}

    def bucket(self, batch: int) -> int:
        """The smallest bucket that holds `batch` windows."""
        return next(b for b in self.batch_buckets if b >= batch)


def limits_from_flags(args: Any) -> ServerLimits:
    """serve_policy.py's limit flags -> ServerLimits, checked before anything loads: a
    ValueError names the flag (``--max_batch must be an int >= 1, got 0``)."""
    if not args.max_request_mb > 0:
        raise ValueError(f"--max_request_mb must be > 0, got {args.max_request_mb}")
    try:
        return ServerLimits.up_to(
            args.max_batch,
            min_image_side=args.min_image_side,
            max_image_side=args.max_image_side,
            max_request_bytes=max(1, int(args.max_request_mb * 2**20)),
            max_queued=args.max_queued,
            max_connections=args.max_connections,
            message_timeout_s=args.message_timeout_s,
        )
    except ValueError as error:  # the fields are the flags' names
        fields = "|".join(f.name for f in dataclasses.fields(ServerLimits))
        raise ValueError(re.sub(rf"\b({fields})\b", r"--\1", str(error))) from error


def check_inference_request(
    observation: Mapping[str, Any],
    instruction: Any,
    goal: Mapping[str, Any] | None,
    *,
    single: bool,
    metadata: Mapping[str, Any],
    limits: ServerLimits,
) -> int:
    """Raises ValueError/TypeError naming what is wrong; returns the batch size.

    `observation`: ``{image_<camera>: uint8[(b,) W, h, w, 3], proprio: [(b,) W, P], masks}``;
    `single`: no batch axis. `metadata`: `Policy.metadata()`.
    """
    cameras = _check_keys(observation, metadata, "observation")
    check_field_types(observation, "observation")
    _check_numbers(observation, "observation")
    batch = 1
    for key in sorted(set(observation) & cameras):
        _check_images(observation[key], f"observation {key!r}", 4 if single else 5, limits)
    if not single:
        leading = {np.shape(v)[0] for k, v in observation.items() if k != PAD_MASK_DICT}
        if len(leading) > 1:
            raise ValueError(f"observation arrays disagree on the batch size: {sorted(leading)}")
        batch = leading.pop() if leading else batch
    if batch > limits.max_batch:
        raise ValueError(f"batch of {batch} windows; this server takes at most {limits.max_batch}")
    if batch < 1:
        raise ValueError("an empty batch")
    _check_instruction(instruction, batch, single, limits)
    if goal is not None:
        if not isinstance(goal, Mapping):
            raise TypeError(f"'goal' must be a map camera -> image, got {type(goal).__name__}")
        known_goals = set(metadata.get("goal_cameras", {}))
        unknown = sorted(set(goal) - known_goals)
        if unknown:
            known = sorted(known_goals)
            raise ValueError(f"unknown goal cameras {unknown}; this model takes {known}")
        for camera, images in goal.items():
            _check_images(images, f"goal {camera!r}", 3 if single else 4, limits)
    return batch


def check_frame(frame: Mapping[str, Any], metadata: Mapping[str, Any], limits) -> None:
    """One robot frame ``{image_<camera>: uint8[h, w, 3], proprio: [P]}`` of a session."""
    cameras = _check_keys(frame, metadata, "frame")
    check_field_types(frame, "frame")
    _check_numbers(frame, "frame")
    for key in sorted(set(frame) & cameras):
        _check_images(frame[key], f"frame {key!r}", 3, limits)


def _check_keys(observation: Mapping[str, Any], metadata: Mapping[str, Any], what: str) -> set:
    """The camera keys the model reads; unknown keys and unread proprio are errors."""
    cameras = {IMAGE_PREFIX + c for c in metadata["cameras"]}
    allowed = cameras | {TIMESTEP_PAD_MASK, PAD_MASK_DICT, TIMESTEP}
    if metadata.get("proprio_dim"):
        allowed |= {PROPRIO, PROPRIO_PAD_MASK}
    elif PROPRIO in observation:
        raise ValueError("this model reads no proprio; do not send 'proprio'")
    unknown = set(observation) - allowed
    if unknown:
        raise ValueError(
            f"unknown {what} keys {describe_keys(unknown)}; this model reads {sorted(allowed)}"
        )
    return cameras


def _check_numbers(observation: Mapping[str, Any], what: str) -> None:
    """Proprio must be a finite float array (NaN/Inf would reach every action)."""
    if PROPRIO not in observation:
        return
    proprio = observation[PROPRIO]
    if not isinstance(proprio, np.ndarray) or proprio.dtype.kind not in "fiu":
        kind = type(proprio).__name__ if not isinstance(proprio, np.ndarray) else proprio.dtype
        raise TypeError(f"{what} {PROPRIO!r} must be a numeric numpy array, got {kind}")
    check_finite(f"{what} {PROPRIO!r}", proprio)


def _check_images(images, where: str, ndim: int, limits: ServerLimits) -> None:
    """Checks uint8[(b,) (W,) h, w, 3] with `ndim` axes and sides within the limits."""
    array = images if isinstance(images, np.ndarray) else None
    if array is None or array.dtype != np.uint8:
        kind = type(images).__name__ if array is None else str(array.dtype)
        raise TypeError(f"{where} must be a uint8 numpy array, got {kind}")
    if array.ndim != ndim or array.shape[-1] != 3:
        raise ValueError(
            f"{where} must be uint8 with {ndim} axes [..., h, w, 3], got shape {list(array.shape)}"
        )
    height, width = array.shape[-3:-1]
    low, high = limits.min_image_side, limits.max_image_side
    if not (low <= height <= high and low <= width <= high):
        raise ValueError(f"{where} is {height}x{width}; each side must be in [{low}, {high}]")


def _check_instruction(instruction, batch: int, single: bool, limits: ServerLimits) -> None:
    texts = [instruction] if isinstance(instruction, str) else instruction
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TypeError(
            f"'instruction' must be a string or a list of strings, got {type(instruction).__name__}"
        )
    if not isinstance(instruction, str) and (single or len(texts) != batch):
        raise ValueError(f"{len(texts)} instructions for {1 if single else batch} windows")
    longest = max((len(t) for t in texts), default=0)
    if longest > limits.max_instruction_chars:
        raise ValueError(
            f"an instruction of {longest} characters; at most {limits.max_instruction_chars}"
        )


def pad_batch(tree: Any, size: int) -> Any:
    """Every array's leading axis padded to `size` by repeating its last element."""
    if isinstance(tree, Mapping):
        return {k: pad_batch(v, size) for k, v in tree.items()}
    if isinstance(tree, list):
        return tree + [tree[-1]] * (size - len(tree))
    array = np.asarray(tree)
    missing = size - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)], axis=0)

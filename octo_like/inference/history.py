"""Observation history: single-timestep frames in, the model's window ``[W, ...]`` out.

The model was trained on windows whose first slots are padding at the start of an episode
(`timestep_pad_mask` False there, see `octo_like/schema.py`). At inference the robot sees
one frame per control step, so this keeps the last W frames and reproduces exactly that
layout: before W frames have been pushed, the missing leading slots repeat the first frame
(any content would do, the mask hides them, but a real image keeps the statistics of the
encoder's inputs in range) and are marked False.

    history = ObservationHistory(window=2)
    history.reset()
    obs = history.push({"image_primary": uint8[h, w, 3], "proprio": float32[P]})
    obs["image_primary"]        # uint8[2, h, w, 3]
    obs["timestep_pad_mask"]    # bool[2]: [False, True] after the first push
    obs["pad_mask_dict"]        # {"image_primary": bool[2], "proprio": bool[2]}
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from octo_like.inference.request_fields import check_field_types
from octo_like.schema import IMAGE_PREFIX, PAD_MASK_DICT, PROPRIO, TIMESTEP_PAD_MASK, describe_keys

Frame = Mapping[str, Any]


class ObservationHistory:
    """The last `window` frames of one episode, stacked per key.

    A frame is ``{key: array}`` for one timestep. It may carry its own
    ``pad_mask_dict: {key: bool}`` to mark a key as absent at that step (e.g. a dropped camera
    frame); keys it does not name count as present. Every frame of an episode must have the same
    keys and per-key shapes as the first one (a silent change would feed the model garbage).
    """

    def __init__(self, window: int):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"ObservationHistory: window must be an int >= 1, got {window!r}")
        self.window = window
        self._frames: deque[dict[str, np.ndarray]] = deque(maxlen=window)
        self._present: deque[dict[str, bool]] = deque(maxlen=window)
        self._first: tuple[dict[str, np.ndarray], dict[str, bool]] | None = None

    def reset(self) -> None:
        """Forgets the episode; the next push starts a new one."""
        self._frames.clear()
        self._present.clear()
        self._first = None

    @property
    def num_pushed(self) -> int:
        """Real frames in the window (at most `window`)."""
        return len(self._frames)

    def push(self, frame: Frame) -> dict[str, Any]:
        """Adds one timestep and returns the window.

        Returns ``{key: array[W, ...]}`` for every key of the frame, ``timestep_pad_mask
        bool[W]`` (False for slots before the first frame of the episode) and
        ``pad_mask_dict: {key: bool[W]}`` (the timestep mask AND the frame's own per-key mask).
        """
        arrays, present = self._split(frame)
        if self._first is None:
            self._first = (arrays, present)
        else:
            self._check_consistent(arrays)
        self._frames.append(arrays)
        self._present.append(present)
        return self._window()

    def _split(self, frame: Frame) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        check_field_types(frame, "frame")
        masks = dict(frame.get(PAD_MASK_DICT, {}))
        arrays = {k: np.asarray(v) for k, v in frame.items() if k != PAD_MASK_DICT}
        if not arrays:
            raise ValueError("a frame needs at least one array (e.g. image_primary or proprio)")
        if TIMESTEP_PAD_MASK in arrays:
            raise ValueError(
                f"a frame is one timestep; {TIMESTEP_PAD_MASK!r} is made by the history, "
                "not passed in"
            )
        unknown = sorted(set(masks) - set(arrays))
        if unknown:
            raise ValueError(f"frame pad_mask_dict names keys the frame lacks: {unknown}")
        present = {k: bool(np.asarray(masks.get(k, True))) for k in arrays}
        return arrays, present

    def _check_consistent(self, arrays: dict[str, np.ndarray]) -> None:
        first = self._first[0]
        if set(arrays) != set(first):
            raise ValueError(
                f"frame keys changed within an episode: first {describe_keys(first)}, now "
                f"{describe_keys(arrays)} (call reset() between episodes)"
            )
        for key, value in arrays.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"frame {key!r} has shape {value.shape}, the episode's first frame had "
                    f"{first[key].shape}"
                )

    def _window(self) -> dict[str, Any]:
        missing = self.window - len(self._frames)
        first_arrays, first_present = self._first
        frames = [first_arrays] * missing + list(self._frames)
        present = [first_present] * missing + list(self._present)
        timestep_pad_mask = np.array([False] * missing + [True] * len(self._frames))
        out: dict[str, Any] = {k: np.stack([f[k] for f in frames]) for k in first_arrays}
        out[TIMESTEP_PAD_MASK] = timestep_pad_mask
        out[PAD_MASK_DICT] = {
            k: timestep_pad_mask & np.array([p[k] for p in present]) for k in first_arrays
        }
        return out


def stack_windows(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stacks several envs' windows (each from `ObservationHistory.push`) into a batch.

    ``[{key: array[W, ...]}] * b -> {key: array[b, W, ...]}``, nested dicts (pad_mask_dict)
    included. All windows must have the same keys and shapes.
    """
    if not windows:
        raise ValueError("stack_windows needs at least one window")
    keys = set(windows[0])
    for i, window in enumerate(windows[1:], start=1):
        if set(window) != keys:
            raise ValueError(
                f"window {i} has keys {describe_keys(window)}, window 0 has {describe_keys(keys)}"
            )
    out: dict[str, Any] = {}
    for key in windows[0]:
        values = [w[key] for w in windows]
        if isinstance(values[0], Mapping):
            out[key] = stack_windows(values)
            continue
        shapes = {np.shape(v) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"cannot batch {key!r}: windows have shapes {sorted(shapes)}")
        out[key] = np.stack([np.asarray(v) for v in values])
    return out


def is_batched(observation: Mapping[str, Any]) -> bool:
    """Whether a windowed observation has a leading batch axis.

    Decided by `timestep_pad_mask` (bool[W] vs bool[b, W]) if present, else by an image
    (uint8[W, h, w, 3] vs [b, W, h, w, 3]) or proprio (float32[W, P] vs [b, W, P]).
    """
    if TIMESTEP_PAD_MASK in observation:
        return np.ndim(observation[TIMESTEP_PAD_MASK]) == 2
    for key, value in observation.items():
        if key.startswith(IMAGE_PREFIX):
            return np.ndim(value) == 5
    if PROPRIO in observation:
        return np.ndim(observation[PROPRIO]) == 3
    raise ValueError(
        f"observation has no image_<camera>, {PROPRIO!r} or {TIMESTEP_PAD_MASK!r}; "
        f"given keys: {describe_keys(observation)}"
    )


def add_batch_axis(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: array[...]}`` -> ``{key: array[1, ...]}``, nested dicts included."""
    return {
        k: add_batch_axis(v) if isinstance(v, Mapping) else np.asarray(v)[None]
        for k, v in tree.items()
    }

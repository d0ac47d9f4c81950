"""Stage 4 of the pipeline (`octo_like/schema.py`): encoded images -> resized, augmented uint8.

Input, one frame of a windowed trajectory (window W)::

    observation.image_<camera>                 string[W]   b"" where the camera is missing
    observation.pad_mask_dict.image_<camera>   bool[W]
    task.image_<camera>                        string[]    goal image, b"" when absent
    task.pad_mask_dict.image_<camera>          bool[]
    dataset_name string[], episode_index int64[], episode_id string[]   (for error messages)

Output: the same frame with ``observation.image_<camera>`` uint8[W, h, w, 3] and
``task.image_<camera>`` uint8[h, w, 3] at the camera's configured (h, w); other keys untouched.

All functions are graph-mode TensorFlow for `tf.data.Dataset.map`. Randomness comes only from
the explicit ``int32/int64[2]`` seed given per frame, so parallel maps stay deterministic; each
camera and the camera dropout fold their own constant into it, so they draw independently.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from octo_like import schema
from octo_like.data.image_ops import (
    AugmentConfig,
    augment_images,
    decode_images,
    decode_resize,
    sample_augment_params,
)

__all__ = [
    "AugmentConfig",
    "CameraTransform",
    "augment_images",
    "decode_images",
    "dropout_cameras",
    "transform_frame",
]


@dataclasses.dataclass(frozen=True)
class CameraTransform:
    """How one camera's images are prepared: output size and optional train-time augmentation."""

    size: tuple[int, int]  # (height, width) output
    augment: AugmentConfig | None = None  # None = no augmentation for this camera

    def __post_init__(self):
        if len(self.size) != 2 or not all(isinstance(s, int) and s > 0 for s in self.size):
            raise ValueError(f"CameraTransform.size must be two positive ints, got {self.size!r}")
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"CameraTransform.augment must be an AugmentConfig, got {self.augment}")


def _name_seed(seed: tf.Tensor, name: str) -> tf.Tensor:
    """A seed for `name` derived from the frame seed (crc32 is stable across processes)."""
    return tf.random.experimental.stateless_fold_in(seed, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _context(frame: Mapping[str, Any], camera: str) -> tf.Tensor | str:
    """Where an image came from, for error messages."""
    parts: list[Any] = []
    if schema.DATASET_NAME in frame:
        parts += ["dataset '", frame[schema.DATASET_NAME], "' "]
    if schema.EPISODE_INDEX in frame:
        parts += ["episode ", tf.strings.as_string(frame[schema.EPISODE_INDEX]), " "]
    if schema.EPISODE_ID in frame:
        parts += ["(id '", frame[schema.EPISODE_ID], "') "]
    parts.append(f"camera '{camera}'")
    return tf.strings.join(parts) if len(parts) > 1 else parts[0]


def _image_keys(tree: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in tree if k.startswith(schema.IMAGE_PREFIX))


def transform_frame(
    frame: dict,
    seed: tf.Tensor | None,
    cameras: Mapping[str, CameraTransform],
    *,
    train: bool,
) -> dict:
    """Decodes, resizes and (when `train`) augments every camera's history and goal images.

    `cameras` maps camera names (``primary``, not ``image_primary``) to their transforms and must
    cover exactly the frame's observation cameras. A camera's W history images and its goal are
    one batch with one augmentation draw, so they stay aligned. `seed` (int32/int64[2]) is only
    needed when some camera is augmented.
    """
    observation = frame["observation"]
    task = frame.get("task", {})
    present = {schema.camera_of(k) for k in _image_keys(observation)}
    if present != set(cameras):
        raise ValueError(
            f"transform_frame: frame cameras {sorted(present)} != configured cameras "
            f"{sorted(cameras)} (missing config: {sorted(present - set(cameras))}, "
            f"missing in frame: {sorted(set(cameras) - present)})"
        )
    augmenting = train and any(t.augment is not None for t in cameras.values())
    if augmenting and seed is None:
        raise ValueError("transform_frame: train=True with augmentation needs a seed")

    new_observation, new_task = dict(observation), dict(task)
    for camera, transform in cameras.items():
        key = schema.image_key(camera)
        history = tf.convert_to_tensor(observation[key])
        if history.dtype != tf.string:
            raise ValueError(
                f"transform_frame: observation.{key} must be encoded string[W], got {history.dtype}"
                " (already decoded?)"
            )
        flat = tf.reshape(history, [-1])
        goal = task.get(key)
        if goal is not None:
            flat = tf.concat([flat, tf.reshape(goal, [1])], axis=0)
        params = None
        if train and transform.augment is not None:
            params = sample_augment_params(_name_seed(seed, key), transform.augment)
        images = decode_resize(flat, transform.size, params, context=_context(frame, camera))
        image_shape = [*transform.size, 3]
        count = tf.size(history)
        if history.shape.is_fully_defined():
            history_shape = [*history.shape, *image_shape]
        else:
            history_shape = tf.concat([tf.shape(history), image_shape], axis=0)
        new_observation[key] = tf.reshape(images[:count], history_shape)
        if goal is not None:
            new_task[key] = tf.ensure_shape(images[count], image_shape)
    out = dict(frame)
    out["observation"] = new_observation
    if "task" in frame:
        out["task"] = new_task
    return out


def _drop(image: tf.Tensor, dropped: tf.Tensor) -> tf.Tensor:
    """Empties (encoded) or zeroes (decoded) `image` when `dropped`; cond skips the copy."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        return tf.where(dropped, tf.zeros_like(image), image)
    return tf.cond(dropped, lambda: tf.zeros_like(image), lambda: image)


def dropout_cameras(
    frame: dict, seed: tf.Tensor, probability: float, always_keep: str | None = None
) -> dict:
    """Drops each present camera with `probability`, keeping at least one present camera.

    A camera is present when any of its history pad mask or its goal pad mask is True. Dropping
    zeroes its images (or empties them when still encoded: apply it before `transform_frame` to
    skip decoding dropped cameras) and sets its pad masks False, for every history step and the
    goal alike. `always_keep` (a camera name) is never dropped when present; when it is absent
    or None and every present camera was drawn for dropping, a random present one is kept.
    Hence a camera's drop rate is ``p - p**K / K`` for K present cameras, not quite p.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"dropout_cameras: probability must be in [0, 1], got {probability}")
    observation = frame["observation"]
    task = frame.get("task", {})
    keys = _image_keys(observation)
    cameras = [schema.camera_of(k) for k in keys]
    if always_keep is not None and always_keep not in cameras:
        raise ValueError(f"dropout_cameras: always_keep {always_keep!r} is not in {cameras}")
    if not keys or probability == 0.0:
        return frame
    obs_masks = observation.get(schema.PAD_MASK_DICT, {})
    task_masks = task.get(schema.PAD_MASK_DICT, {})
    missing = [k for k in keys if k not in obs_masks]
    if missing:
        raise ValueError(f"dropout_cameras: observation.pad_mask_dict lacks {missing}")

    present_list = []
    for key in keys:
        is_present = tf.reduce_any(obs_masks[key])
        if key in task_masks:
            is_present |= tf.reduce_any(task_masks[key])
        present_list.append(is_present)
    present = tf.stack(present_list)
    seed = _name_seed(seed, "camera_dropout")
    draws = tf.random.stateless_uniform(
        [len(keys)], tf.random.experimental.stateless_fold_in(seed, 0)
    )
    dropped = present & (draws < probability)
    if always_keep is not None:
        dropped &= tf.constant([c != always_keep for c in cameras])
    # Rescue one random present camera when all of them were drawn for dropping.
    scores = tf.random.stateless_uniform(
        [len(keys)], tf.random.experimental.stateless_fold_in(seed, 1)
    )
    rescued = tf.one_hot(
        tf.argmax(tf.where(present, scores, -1.0)), len(keys), on_value=True, off_value=False
    )
    all_dropped = tf.reduce_any(present) & tf.reduce_all(dropped | ~present)
    dropped &= ~(all_dropped & rescued)

    new_observation, new_task = dict(observation), dict(task)
    new_obs_masks, new_task_masks = dict(obs_masks), dict(task_masks)
    for index, key in enumerate(keys):
        drop = dropped[index]
        new_observation[key] = _drop(observation[key], drop)
        new_obs_masks[key] = tf.convert_to_tensor(obs_masks[key]) & ~drop
        if key in task:
            new_task[key] = _drop(task[key], drop)
        if key in task_masks:
            new_task_masks[key] = tf.convert_to_tensor(task_masks[key]) & ~drop
    new_observation[schema.PAD_MASK_DICT] = new_obs_masks
    out = dict(frame)
    out["observation"] = new_observation
    if "task" in frame:
        if task_masks:
            new_task[schema.PAD_MASK_DICT] = new_task_masks
        out["task"] = new_task
    return out

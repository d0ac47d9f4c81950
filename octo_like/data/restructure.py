"""Raw RLDS trajectory -> standardized trajectory (schema stage 1 -> stage 2).

The dataset's standardization function (from the OXE registry) first converts actions to the
common encoding and may derive observation entries (e.g. ``proprio``); this module then picks the
configured cameras, proprio and language by the dataset's spec and drops everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from octo_like import schema
from octo_like.data.oxe.action_families import get_path
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.data.validation import DataError


def check_cameras(spec: DatasetSpec, cameras: Sequence[str]) -> None:
    """Fails early when none of the run's cameras exists in the dataset (nothing would be seen).

    Keys the spec names but the data lacks are caught by the standardization check
    (`octo_like.data.oxe.standardize.check_standardized`), which names dataset and key.
    """
    if not any(spec.image_keys.get(camera) for camera in cameras):
        raise DataError(
            f"dataset {spec.name!r} provides cameras {list(spec.cameras)} but the run reads "
            f"only {list(cameras)}: no image of this dataset would be used"
        )


def restructure(
    traj: dict, spec: DatasetSpec, cameras: Sequence[str], episode_index: tf.Tensor
) -> dict:
    """Standardized RLDS trajectory -> schema stage 2 (see `octo_like/schema.py`)."""
    action = tf.cast(traj[schema.ACTION], tf.float32)
    length = tf.shape(action)[0]
    observation = {}
    for camera in cameras:
        raw_key = spec.image_keys.get(camera)
        if raw_key is None:
            observation[schema.image_key(camera)] = tf.fill([length], "")
        else:
            observation[schema.image_key(camera)] = get_path(
                traj["observation"], raw_key, spec.name
            )  # a nested path ("cameras/front/rgb") works
    if spec.proprio_key is None:
        proprio = tf.zeros([length, 0], tf.float32)
    else:
        proprio = tf.cast(traj["observation"][spec.proprio_key], tf.float32)
        if proprio.shape.rank == 1:
            proprio = proprio[:, None]
    observation[schema.PROPRIO] = proprio
    observation[schema.TIMESTEP] = tf.range(length, dtype=tf.int32)
    if spec.language_key is None:
        language = tf.fill([length], "")
    else:
        language = get_path(traj, spec.language_key, spec.name)
    return {
        "observation": observation,
        "task": {schema.LANGUAGE: language},
        schema.ACTION: action,
        schema.DATASET_NAME: tf.fill([length], spec.name),
        schema.EPISODE_INDEX: tf.fill([length], tf.cast(episode_index, tf.int64)),
        # Scalar (not [T]) so that even a zero-length episode can be named in errors.
        schema.EPISODE_ID: traj.get("tfds_id", tf.constant(spec.name)),
    }

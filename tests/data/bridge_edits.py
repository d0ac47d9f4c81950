"""Copies of the real Bridge shard with one defect, made by raw TFRecord / features.json edits
(not through the project's writer), for the bad-input tests of issue 13."""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable

import numpy as np
import tensorflow as tf

TRAIN_SHARD = "bridge_dataset-train.tfrecord-00000-of-00001"
BAD_EPISODE = 3  # record index of the edited episode
BAD_STEP = 2
CAMERA = "steps/observation/image_0"  # Bridge's primary camera


def edited_bridge(
    source: str,
    target: pathlib.Path,
    edit: Callable[[dict], None],
    features_edit: Callable[[dict], None] | None = None,
) -> pathlib.Path:
    """`target`/bridge_dataset/1.0.0: the shard with `edit(feature_map)` applied to episode
    `BAD_EPISODE` of the train split, and `features_edit(features_json)` to features.json."""
    directory = target / "bridge_dataset" / "1.0.0"
    shutil.copytree(source, directory)
    shard = directory / TRAIN_SHARD
    records = []
    for index, raw in enumerate(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()):
        example = tf.train.Example.FromString(raw)
        if index == BAD_EPISODE:
            edit(example.features.feature)
        records.append(example.SerializeToString())
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    if features_edit is not None:
        path = directory / "features.json"
        features = json.loads(path.read_text())
        features_edit(features)
        path.write_text(json.dumps(features))
    return directory


def length(feature) -> int:
    return len(feature["steps/is_first"].int64_list.value)


def corrupt_jpeg_body(feature) -> None:
    """A JPEG whose header is intact and whose entropy-coded body is garbage."""
    images = feature[CAMERA].bytes_list.value
    data = bytearray(images[BAD_STEP])
    start = data.index(b"\xff\xda") + 12  # just past the start-of-scan header
    rng = np.random.default_rng(0)
    data[start:-2] = bytes(rng.integers(0, 256, len(data) - 2 - start, dtype=np.uint8))
    images[BAD_STEP] = bytes(data)


def resize_camera(feature, side: int = 32) -> None:
    """Every image of the camera re-encoded at side x side (features.json still says 64)."""
    images = feature[CAMERA].bytes_list.value
    small = tf.io.encode_jpeg(tf.zeros([side, side, 3], tf.uint8)).numpy()
    for i in range(len(images)):
        images[i] = small


def one_step(feature) -> None:
    """The episode cut to its first step (every per-step feature)."""
    steps = length(feature)
    for key, value in feature.items():
        if not key.startswith("steps/"):
            continue
        for kind in ("float_list", "int64_list", "bytes_list"):
            values = getattr(value, kind).value
            if len(values):
                keep = list(values[: len(values) // steps])
                del values[:]
                values.extend(keep)


def nan_action(feature) -> None:
    values = feature["steps/action"].float_list.value
    width = len(values) // length(feature)
    for i in range(BAD_STEP * width, (BAD_STEP + 1) * width):
        values[i] = float("nan")


def nan_state(feature) -> None:
    values = feature["steps/observation/state"].float_list.value
    width = len(values) // length(feature)
    values[BAD_STEP * width] = float("nan")


def missing_action(feature) -> None:
    """The episode's records lack `steps/action` (it decodes as 0 steps)."""
    del feature["steps/action"]


def six_dim_actions_everywhere(feature) -> None:
    values = feature["steps/action"].float_list.value
    kept = [v for i, v in enumerate(values) if i % 7 != 6]
    del values[:]
    values.extend(kept)


def six_dim_action_feature(features: dict) -> None:
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    steps["featuresDict"]["features"]["action"]["tensor"]["shape"]["dimensions"] = ["6"]


def corrupt_jpeg_header(feature) -> None:
    """A JPEG that starts like one (FF D8 FF) and then holds garbage: even its size is unknown."""
    images = feature[CAMERA].bytes_list.value
    rng = np.random.default_rng(1)
    images[BAD_STEP] = b"\xff\xd8\xff" + bytes(rng.integers(0, 256, 500, dtype=np.uint8))

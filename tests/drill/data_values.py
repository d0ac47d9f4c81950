"""Drill cases (issue 40): bad values and shard lists at the data entry: out-of-range actions on a
user's (custom) dataset, instructions that are not UTF-8, zero-shard and unlisted-shard datasets,
a large shard rewritten in place with its modification time kept."""

from __future__ import annotations

import itertools
import pathlib
import re
import shutil

import numpy as np

from tests.drill.common import case, expect_error, one_line
from tests.drill.data import TRAIN_SHARD, _edited, _trajectories


def _custom_dataset(ctx, name: str, override=None, padding_bytes: int = 0) -> str:
    """A user's dataset (``custom`` 4-dim actions, camera ``rgb``, 3-dim ``joints``): 4 episodes
    of 6 steps; `padding_bytes` of an unread step feature per step make its shard large."""
    from octo_like.data import synthetic

    step = {"action": synthetic.tensor((4,)), "language_instruction": synthetic.text()}
    if padding_bytes:
        step["padding"] = synthetic.text()
    schema = synthetic.RldsSchema(
        observation={"rgb": synthetic.image(24, 24), "joints": synthetic.tensor((3,))}, step=step
    )

    def edit(split, index, episode):
        if padding_bytes:
            length = len(episode["steps"]["is_first"])
            episode["steps"]["padding"] = [b"\0" * padding_bytes] * length
        if override is not None:
            override(index, episode["steps"])

    return synthetic.write_rlds_dataset(
        str(ctx.tmp / "data"), name, schema, episodes={"train": 4}, episode_length=6,
        override=edit,
    )  # fmt: skip


def _custom_config(ctx, name: str, location: str, **overrides):
    from octo_like.data.config import (
        CameraTransform,
        DataConfig,
        DatasetSource,
        FrameTransformConfig,
    )
    from octo_like.data.oxe.spec import ActionEncoding, DatasetSpec

    spec = DatasetSpec(
        name=name, image_keys={"primary": "rgb"}, action_encoding=ActionEncoding.CUSTOM,
        proprio_key="joints", standardize="identity",
    )  # fmt: skip
    return DataConfig(
        datasets=(DatasetSource(name, location),), batch_size=4, shuffle_buffer=16,
        statistics_cache_dir=str(ctx.tmp / "stats"), extra_specs={name: spec},
        frame=FrameTransformConfig(cameras={"primary": CameraTransform(size=(24, 24))}),
        **overrides,
    )  # fmt: skip


def _first_batch(config):
    from octo_like.data.pipeline import make_pipeline

    return next(iter(make_pipeline(config)))


@case("data-custom-3e38-action", "data")
def custom_huge_action(ctx):
    """One 3e38 action in a user's custom dataset: its mean/std became inf or ~1e37 silently."""

    def huge(index, steps):
        if index == 1:
            steps["action"][2, 1] = 3e38

    location = _custom_dataset(ctx, "drill_custom", huge)
    config = _custom_config(ctx, "drill_custom", location)
    return expect_error(
        lambda: _first_batch(config), r"drill_custom.*episode.*dim 1, is 3\.000e\+38",
        silent_if="statistics computed with a 3e38 action, no error",
    )  # fmt: skip


@case("data-instruction-invalid-utf8", "data")
def instruction_invalid_utf8(ctx):
    """Invalid UTF-8 bytes in an instruction: a UnicodeDecodeError at model init before."""

    def bad_text(index, steps):
        if index == 1:
            steps["language_instruction"][2] = b"pick up the \xff\xfe block"

    location = _custom_dataset(ctx, "drill_utf8", bad_text)
    config = _custom_config(ctx, "drill_utf8", location)

    def run():
        from octo_like.data.pipeline import make_pipeline

        for batch in itertools.islice(iter(make_pipeline(config)), 12):  # every step, twice
            for text in batch["task"]["language_instruction"]:
                text.decode("utf-8")  # what the tokenizer does first
        return "decoded"

    return expect_error(run, r"drill_utf8.*episode.*language_instruction.*UTF-8", silent_if="read")


def _shard_lengths_emptied(directory):
    import json

    path = directory / "dataset_info.json"
    info = json.loads(path.read_text())
    for split in info["splits"]:
        if split["name"] == "train":
            split["shardLengths"] = []
    path.write_text(json.dumps(info))


@case("data-zero-shard-dataset-info", "data")
def zero_shard_info(ctx):
    """dataset_info.json lists no train shard (the shard is still there): 'no trajectories'."""
    directory = _edited(ctx, file_edit=_shard_lengths_emptied)
    return expect_error(
        lambda: _trajectories(directory, False), r"bridge_dataset.*dataset_info\.json"
    )


@case("data-unlisted-shard", "data")
def unlisted_shard(ctx):
    """A shard file dataset_info.json does not list: its episodes were ignored silently."""
    extra = "bridge_dataset-train.tfrecord-00001-of-00002"

    def add(directory):
        shutil.copy(directory / TRAIN_SHARD, directory / extra)

    directory = _edited(ctx, file_edit=add)
    return expect_error(
        lambda: _trajectories(directory, False), rf"bridge_dataset.*{re.escape(extra)}",
        silent_if="read only the listed shard",
    )  # fmt: skip


@case("data-rewritten-large-shard-mtime-kept", "data", good="none-needed")
def rewritten_large_shard(ctx):
    """A >64 MiB shard (the key samples 4 blocks of it) rewritten in place with the actions of
    its middle episodes x100, same size, modification time restored: the next run must not
    reuse the old statistics."""
    import os

    import tensorflow as tf

    from octo_like.data import content_key
    from octo_like.data.prepare import prepare_dataset

    location = _custom_dataset(ctx, "drill_large", padding_bytes=3 << 20)  # 72 MiB shard
    config = _custom_config(ctx, "drill_large", location)
    (shard,) = pathlib.Path(location).glob("drill_large-train.tfrecord-*")
    size = shard.stat().st_size
    if size <= content_key.FULL_HASH_BYTES:
        return "crash", f"the drill's shard is only {size} bytes: not the sampled path"
    before = prepare_dataset(config.datasets[0], config).statistics
    sampled = content_key._digest(str(shard), size, whole=False)
    status = shard.stat()
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    for index in range(1, len(records) - 1):  # the middle episodes: between the sampled blocks
        example = tf.train.Example.FromString(records[index])
        values = example.features.feature["steps/action"].float_list.value
        scaled = [v * 100 for v in values]
        del values[:]
        values.extend(scaled)
        records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    os.utime(shard, ns=(status.st_atime_ns, status.st_mtime_ns))
    kept = shard.stat().st_size == size and shard.stat().st_mtime_ns == status.st_mtime_ns
    same_samples = content_key._digest(str(shard), size, whole=False) == sampled
    after = prepare_dataset(config.datasets[0], config).statistics
    ratio = float(np.max(after.action.std / before.action.std))
    detail = (
        f"{size >> 20} MiB shard, size and mtime kept: {kept}, sampled blocks unchanged: "
        f"{same_samples}; action std ratio after/before {ratio:.1f}"
    )
    if ratio > 10:
        return "none-needed", one_line(f"recomputed: {detail}")
    return "silent", one_line(f"stale statistics reused: {detail}")

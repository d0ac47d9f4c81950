"""Thread counts set the input pipeline's speed, never its batches (issue 70, item 1).

Found by running one debug command with `data.parallelism` at 1 and at the 2-core default:
the losses differed from step 1, because two interleaves took their width (which elements
alternate, so the order) from the thread count: the shard files read at once and the
trajectories whose frames are flattened in turn. A run's thread counts default to the host's
cores, so two machines ran one command on other data. The widths are fixed now
(`rlds.FILES_INTERLEAVED`, `dataset.TRAJECTORIES_INTERLEAVED`); the threads are not.
"""

from __future__ import annotations

import json
import pathlib

import tensorflow as tf

from octo_like.data import synthetic
from octo_like.data.config import DataConfig, DatasetSource, FrameTransformConfig
from octo_like.data.dataset import Parallelism
from tests.data.conftest import TOY_SCHEMA, toy_spec
from tests.data.test_pipeline import SMALL_CAMERAS, assert_trees_equal, first_batches

SHARDS = 4


def resharded(version_dir: str, split: str, shards: int) -> None:
    """Splits `split`'s one shard file into `shards` files of consecutive records, listed in
    dataset_info.json as TFDS lists them: what a dataset bigger than one shard looks like."""
    directory = pathlib.Path(version_dir)
    (single,) = directory.glob(f"*-{split}.tfrecord-00000-of-00001")
    records = list(tf.data.TFRecordDataset(str(single)).as_numpy_iterator())
    prefix = single.name.removesuffix("-00000-of-00001")
    lengths = [len(part) for part in (records[i::shards] for i in range(shards))]
    start = 0
    for index, length in enumerate(lengths):
        with tf.io.TFRecordWriter(str(directory / f"{prefix}-{index:05d}-of-{shards:05d}")) as out:
            for record in records[start : start + length]:
                out.write(record)
        start += length
    single.unlink()
    info = json.loads((directory / "dataset_info.json").read_text())
    (entry,) = [s for s in info["splits"] if s["name"] == split]
    entry["shardLengths"] = [str(n) for n in lengths]
    (directory / "dataset_info.json").write_text(json.dumps(info))


def test_one_command_gives_the_same_batches_at_any_thread_count(tmp_path):
    root = str(tmp_path / "rlds")
    version = synthetic.write_rlds_dataset(
        root, "toy_sharded", TOY_SCHEMA, episodes={"train": 12}, episode_length=(6, 12)
    )
    resharded(version, "train", SHARDS)
    assert len(list(pathlib.Path(version).glob("*-train.tfrecord-*"))) == SHARDS

    def config(read: int, trajectory: int, frame: int) -> DataConfig:
        return DataConfig(
            datasets=(DatasetSource("toy_sharded", root),),
            batch_size=8,
            shuffle_buffer=64,
            frame=FrameTransformConfig(cameras=SMALL_CAMERAS),
            extra_specs={"toy_sharded": toy_spec("toy_sharded")},
            statistics_cache_dir=str(tmp_path / "stats"),
            parallelism=Parallelism(read=read, trajectory=trajectory, frame=frame),
        )

    one_thread = first_batches(config(1, 1, 1), count=4)
    assert_trees_equal(one_thread, first_batches(config(3, 2, 4), count=4))
    assert_trees_equal(one_thread, first_batches(config(SHARDS, 16, 2), count=4))
    autotuned = config(tf.data.AUTOTUNE, tf.data.AUTOTUNE, tf.data.AUTOTUNE)  # tf.data decides
    assert_trees_equal(one_thread, first_batches(autotuned, count=4))

"""Statistics keyed by content (issue 13): a shard rewritten in place, same size and modification
time, with states x100 (raw TFRecord edits of the real Bridge shard; Bridge's actions are the
reached-state deltas, so they grow x100 too) gets fresh statistics, and
`compute_stats.py --check` reports the drift against the statistics cached before."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from octo_like.data import builder_dir, content_key
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.prepare import prepare_dataset, statistics_fingerprint_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import compute_stats  # noqa: E402

TRAIN_SHARD = "bridge_dataset-train.tfrecord-00000-of-00001"


def scale_in_place(shard: pathlib.Path, feature: str, factor: float) -> None:
    """Rewrites every episode's `feature` x factor: same byte size, same mtime."""
    before = shard.stat()
    records = []
    for raw in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        values = example.features.feature[feature].float_list.value
        scaled = [v * factor for v in values]
        del values[:]
        values.extend(scaled)
        records.append(example.SerializeToString())
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    assert shard.stat().st_size == before.st_size
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def bridge_copy(bridge_dir, tmp_path) -> pathlib.Path:
    copy = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(bridge_dir, copy)
    return copy


def fingerprint(directory) -> str:
    builder = builder_dir.open_builder(str(directory))
    return statistics_fingerprint_for(builder, get_dataset_spec("bridge_dataset"), "train")


def test_an_in_place_rewrite_changes_the_key_and_check_reports_drift(bridge_copy, tmp_path):
    cache = str(tmp_path / "stats")
    source = DatasetSource("bridge_dataset", str(bridge_copy))
    config = DataConfig(datasets=(source,), statistics_cache_dir=cache)
    before = prepare_dataset(source, config).statistics
    key = fingerprint(bridge_copy)
    assert fingerprint(bridge_copy) == key  # stable
    argv = ["--data_dir", str(bridge_copy), "--statistics_cache_dir", cache, "--check"]
    assert compute_stats.main(argv)["bridge_dataset"]["status"] == "ok"

    scale_in_place(bridge_copy / TRAIN_SHARD, "steps/observation/state", 100.0)
    assert fingerprint(bridge_copy) != key
    report = compute_stats.main(argv)["bridge_dataset"]
    assert report["status"] == "drift" and report["content"] == "changed since cached"
    assert report["drift"]["action"]["std_ratio_max"] > 50
    assert report["drift"]["proprio"]["max_mean_shift_in_std"] > 10
    after = prepare_dataset(source, config).statistics  # recomputed, not the stale cache
    ratio = after.action.std[:3] / before.action.std[:3]  # xyz moves (angles wrap)
    np.testing.assert_allclose(ratio, 100.0, rtol=1e-3)
    assert len(list(pathlib.Path(cache).glob("bridge_dataset_*.json"))) == 2
    assert compute_stats.main(argv)["bridge_dataset"]["content"] == "current"


def test_sampled_keys_for_large_splits(tmp_path, monkeypatch):
    """Above FULL_HASH_BYTES only sampled blocks are read: a change inside one is noticed."""
    assert content_key.sample_offsets(100, samples=8, block=4096) == [0]
    offsets = content_key.sample_offsets(1 << 20, samples=8, block=4096)
    assert offsets[0] == 0 and offsets[-1] == (1 << 20) - 4096 and len(offsets) == 8
    path = tmp_path / "shard"
    path.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    digest = content_key._digest(str(path), 1 << 20, whole=False)
    data = bytearray(path.read_bytes())
    sampled = content_key.sample_offsets(1 << 20)  # the defaults _digest reads
    data[sampled[1] + 10] ^= 1  # inside a sampled block
    path.write_bytes(bytes(data))
    assert content_key._digest(str(path), 1 << 20, whole=False) != digest


def test_a_large_shard_rewritten_between_its_samples_with_its_mtime_kept_changes_the_key(
    tmp_path,
):
    """Issue 40: above FULL_HASH_BYTES only sampled blocks are read, so a rewrite between them
    that keeps the size and restores the modification time kept the key, and a run reused stale
    statistics. The inode change time does not survive the rewrite."""
    size = content_key.FULL_HASH_BYTES + (1 << 20)
    shard = tmp_path / "big-train.tfrecord-00000-of-00001"
    shard.write_bytes(np.random.default_rng(0).bytes(size))
    info = tmp_path / "dataset_info.json"
    info.write_text("{}")
    key = content_key.files_content_key([str(shard)], str(info))
    assert key["sampling"] != "whole"
    assert content_key.files_content_key([str(shard)], str(info)) == key  # stable
    sampled = content_key._digest(str(shard), size, whole=False)
    before = shard.stat()
    time.sleep(0.05)  # past the file system's timestamp tick (coarse clocks tick every ~4 ms)
    offset = size // 2 + 12345
    assert all(not start <= offset < start + 4096 for start in content_key.sample_offsets(size))
    with open(shard, "r+b") as file:  # in place: same inode, same size
        file.seek(offset)
        file.write(b"rewritten")
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert shard.stat().st_size == size and shard.stat().st_mtime_ns == before.st_mtime_ns
    assert content_key._digest(str(shard), size, whole=False) == sampled  # samples unchanged
    assert content_key.files_content_key([str(shard)], str(info)) != key

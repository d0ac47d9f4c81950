"""Damaged shards and metadata (issue 31, item 4): each case is a copy of the real Bridge shard
(or a small episode file) with bytes cut or flipped, and each is named (dataset, file, record)
or, with `skip_bad_episodes`, skipped and counted, never a busy loop. Reads of damaged shards
run in a subprocess with a timeout, so a loop that never ends fails the test instead of hanging
it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from octo_like import storage
from octo_like.data import builder_dir, rlds
from octo_like.data.episode_files import EpisodeError, read_episode, write_episode_file
from octo_like.data.raw_episodes import convert_episodes
from octo_like.data.statistics import compute_statistics
from octo_like.data.validation import DataError
from tests import memory_fs
from tests.data import bridge_edits as edits
from tests.data.test_bad_frames import trajectories

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARD = edits.TRAIN_SHARD
TIMEOUT_S = 240  # a damaged shard read twice, pipeline built once: ~30 s on a loaded 2-core box


def copied_bridge(bridge_dir: str, tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "data" / "bridge_dataset" / "1.0.0"
    shutil.copytree(bridge_dir, directory)
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


def record_offsets(shard: pathlib.Path) -> list[int]:
    """Byte offset of each record (a TFRecord frames each record with 16 bytes)."""
    offsets, offset = [], 0
    for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
        offsets.append(offset)
        offset += len(record) + 16
    return offsets


def flip_bytes(directory: pathlib.Path, record: int = 5) -> int:
    """Flips bytes in the middle of record `record`'s data (its CRC no longer matches)."""
    shard = directory / SHARD
    offsets = record_offsets(shard)
    data = bytearray(shard.read_bytes())
    middle = (offsets[record] + offsets[record + 1]) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    shard.write_bytes(bytes(data))
    return record


READ_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from octo_like.data import builder_dir
    from octo_like.data.config import DataConfig, DatasetSource
    from octo_like.data.oxe.registry import get_dataset_spec
    from octo_like.data.pipeline import make_pipeline
    from octo_like.data.prepare import standardized_trajectories
    from octo_like.data.validation import SkippedEpisodes, data_errors

    directory, skip, stats_dir = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    result = {}
    try:
        skipped = SkippedEpisodes()
        trajectories = standardized_trajectories(
            builder_dir.open_builder(directory), get_dataset_spec("bridge_dataset"), "train",
            ("primary",), skip_bad_episodes=skip, skipped=skipped,
        )
        with data_errors():
            result["count"] = sum(1 for _ in trajectories.dataset)
        result["skipped"] = [[*key, n] for key, n in skipped.counts.items()]
        config = DataConfig(
            datasets=(DatasetSource("bridge_dataset", directory),), batch_size=8,
            shuffle_buffer=50, skip_bad_episodes=skip, statistics_cache_dir=stats_dir,
        )
        pipe = make_pipeline(config)  # training: shuffled files, repeated
        for index, _ in enumerate(pipe):
            if index == 5:
                break
        result["batches"] = index
        result["pipeline_skipped"] = [[*key, n] for key, n in pipe.skipped.counts.items()]
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    print("RESULT " + json.dumps(result))
    """
)


def read_in_subprocess(directory: pathlib.Path, skip: bool, tmp_path: pathlib.Path) -> dict:
    """Reads the train split, then 5 training batches, in a subprocess; fails on a timeout."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", READ_SCRIPT, str(directory), "1" if skip else "0",
             str(tmp_path / f"stats-{skip}")],
            cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading a damaged shard did not end in {TIMEOUT_S} s (a busy loop?)")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("damage", ["truncated", "flipped_bytes"])
def test_a_damaged_shard_is_named_or_skipped_and_counted_never_a_busy_loop(
    damage, bridge_dir, tmp_path
):
    directory = copied_bridge(bridge_dir, tmp_path)
    offsets = record_offsets(directory / SHARD)
    if damage == "truncated":
        size = (directory / SHARD).stat().st_size // 2
        os.truncate(directory / SHARD, size)
        bad = max(i for i, offset in enumerate(offsets) if offset <= size)
    else:
        bad = flip_bytes(directory)
    where = f"shard {directory / SHARD} is truncated or corrupt at record {bad} "
    where += f"(byte offset {offsets[bad]})"

    failed = read_in_subprocess(directory, skip=False, tmp_path=tmp_path)
    assert failed["error"].startswith("DataError: "), failed
    assert f"dataset 'bridge_dataset', {where}" in failed["error"]

    skipped = read_in_subprocess(directory, skip=True, tmp_path=tmp_path)
    assert "error" not in skipped, skipped
    assert skipped["count"] == bad  # the records before the damage are kept
    assert len(skipped["skipped"]) == 1
    dataset, problem, count = skipped["skipped"][0]
    assert dataset == "bridge_dataset" and where in problem and count == 1
    assert skipped["batches"] == 5  # training goes on over the repeated, damaged shard
    assert [where in p for _, p, _ in skipped["pipeline_skipped"]] == [True]


def test_an_intact_shard_reads_every_record_in_each_process_part(bridge_dir):
    builder = builder_dir.open_builder(bridge_dir)
    parts = [
        [
            e["tfds_id"].decode()
            for e in rlds.read_episodes(
                builder, "train", shard=rlds.ProcessShard(i, 2), shuffle_files=False
            ).as_numpy_iterator()
        ]
        for i in range(2)
    ]
    assert parts[0] + parts[1] == [f"{SHARD}__{i}" for i in range(25)]


# ------------------------------------------------------------------------------- (b) retries
def test_metadata_reads_on_urls_are_retried_on_transient_errors(bridge_dir, monkeypatch):
    memory_fs.register()
    root = "ram://corrupt-shards-retry/bridge_dataset/1.0.0"
    storage.copy_tree(bridge_dir, root)
    try:
        failures = {"exists": 2, "GFile": 2}
        real = {name: getattr(tf.io.gfile, name) for name in failures}

        def failing(name):
            def call(*args, **kwargs):
                if failures[name] > 0:
                    failures[name] -= 1
                    raise tf.errors.UnavailableError(None, None, "503: try again")
                return real[name](*args, **kwargs)

            return call

        monkeypatch.setattr(storage, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
        for name in failures:
            monkeypatch.setattr(tf.io.gfile, name, failing(name))
        builder = builder_dir.open_builder(root)
        assert failures == {"exists": 0, "GFile": 0}
        assert builder.info.name == "bridge_dataset"
        assert len(list(rlds.read_episodes(builder, "val", shuffle_files=False))) == 25
        failures["exists"] = 10  # more than the retries: the error comes through
        with pytest.raises(tf.errors.UnavailableError):
            builder_dir.open_builder(root)
    finally:
        monkeypatch.undo()
        memory_fs.clear("ram://corrupt-shards-retry")


# ------------------------------------------------------------------------------- (c) metadata
def test_a_truncated_dataset_info_json_is_named(bridge_dir, tmp_path):
    directory = copied_bridge(bridge_dir, tmp_path)
    info = directory / "dataset_info.json"
    info.write_bytes(info.read_bytes()[:200])
    with pytest.raises(builder_dir.DatasetMetadataError) as error:
        builder_dir.open_builder(str(directory))
    message = str(error.value)
    assert message.startswith(f"dataset 'bridge_dataset': {info} is not valid JSON")
    with pytest.raises(builder_dir.DatasetMetadataError, match="is not valid JSON"):
        builder_dir.open_source(str(tmp_path / "data"), "bridge_dataset")


def test_a_missing_or_truncated_features_json_is_named(bridge_dir, tmp_path):
    directory = copied_bridge(bridge_dir, tmp_path)
    features = directory / "features.json"
    features.write_text(features.read_text()[:100])
    with pytest.raises(builder_dir.DatasetMetadataError, match=f"{features} is not valid JSON"):
        builder_dir.open_builder(str(directory))
    features.unlink()
    with pytest.raises(builder_dir.DatasetMetadataError) as error:
        builder_dir.open_source(str(tmp_path / "data"), "bridge_dataset")
    assert str(error.value).startswith(f"dataset 'bridge_dataset': {features} is missing")


def test_a_missing_shard_is_named(bridge_dir, tmp_path):
    from octo_like.data.content_key import split_content_key

    directory = copied_bridge(bridge_dir, tmp_path)
    (directory / SHARD).unlink()
    with pytest.raises(FileNotFoundError, match=f"shard {directory / SHARD} .* is missing"):
        split_content_key(builder_dir.open_builder(str(directory)), "train")
    # the reader itself: read lazily and repeated, the empty shard list spun at 100% CPU
    with pytest.raises(builder_dir.DatasetMetadataError, match=r"1 shard file\(s\) .* missing"):
        rlds.read_episodes(builder_dir.open_builder(str(directory)), "train")


# ------------------------------------------------------------------------------- (d) converter
def small_episode(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {"front": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)},
        "action": rng.normal(size=(4, 3)).astype(np.float32),
        "instruction": "pick",
    }


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_npz_is_named_by_the_converter(damage, tmp_path):
    folder = tmp_path / "episodes"
    for index in range(3):
        write_episode_file(folder / f"ep_{index}.npz", **small_episode(index))
    bad = folder / "ep_1.npz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + data[40:])
    with pytest.raises(EpisodeError) as error:
        read_episode(bad)
    assert str(error.value).startswith(f"{bad}: cannot read the file")
    with pytest.raises(EpisodeError, match=f"{bad}: cannot read the file"):
        convert_episodes(str(folder), str(tmp_path / "out"), "robot", verbose=False)
    path = convert_episodes(
        str(folder), str(tmp_path / "out"), "robot", skip_bad=True, val_fraction=0, verbose=False
    )
    assert os.path.exists(os.path.join(path, "dataset_info.json"))


# ------------------------------------------------------------------------------- (e) images
def encoded(image_format: str, side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side + 4, 3), 90, np.uint8)).save(buffer, format=image_format)
    return buffer.getvalue()


def reencode(image_format: str, side: int):
    def edit(feature) -> None:
        images = feature[edits.CAMERA].bytes_list.value
        for i in range(len(images)):
            images[i] = encoded(image_format, side)

    return edit


@pytest.mark.parametrize("image_format", ["BMP", "GIF", "WEBP", "PNG"])
@pytest.mark.slow
def test_a_wrong_size_image_of_any_format_is_named_not_stretched(
    image_format, bridge_dir, tmp_path
):
    """Bridge's image_0 is 64x64; every image of episode 3 is re-encoded at 32x36 (PNG was
    checked before; BMP, GIF and WebP were stretched silently)."""
    directory = edits.edited_bridge(bridge_dir, tmp_path / "wrong", reencode(image_format, 32))
    with pytest.raises(DataError) as error:
        trajectories(directory, skip=False)
    assert (
        f"episode {SHARD}__{edits.BAD_EPISODE}: image 'image_0' at step 0 is 32x36, "
        "features.json says 64x64"
    ) in str(error.value)
    count, skipped = trajectories(directory, skip=True)
    assert count == 24 and sum(skipped.counts.values()) == 1


def test_a_right_size_bmp_passes_the_size_check(bridge_dir, tmp_path):
    from PIL import Image

    def bmp_64(feature) -> None:
        images = feature[edits.CAMERA].bytes_list.value
        for i in range(len(images)):
            buffer = io.BytesIO()
            Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format="BMP")
            images[i] = buffer.getvalue()

    directory = edits.edited_bridge(bridge_dir, tmp_path / "right", bmp_64)
    count, skipped = trajectories(directory, skip=False)
    assert count == 25 and not skipped.counts


# ------------------------------------------------------------------------------- (f) statistics
def trajectories_with(value: float | None, dims: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    trajs = [{"action": rng.normal(size=(40, dims)).astype(np.float32)} for _ in range(10)]
    if value is not None:
        trajs[4]["action"][7, 1] = value
    return trajs


@pytest.mark.parametrize("value", [3e38, -1e30])
def test_a_value_beyond_the_limit_is_refused_not_only_warned_about(value):
    compute_statistics(trajectories_with(1e18), proprio_key=None, name="toy")
    with pytest.raises(ValueError, match=r"dataset 'toy': trajectory 4: 'action' has 1 value"):
        compute_statistics(trajectories_with(value), proprio_key=None, name="toy")


@pytest.mark.parametrize("value", [1e18, -1e12, 1e6])
def test_a_finite_outlier_in_the_statistics_is_warned_about(value, caplog):
    """Up to VALUE_LIMIT; beyond it (3e38, -1e30) a value is refused (test_bad_values.py)."""
    with caplog.at_level(logging.WARNING, logger="octo_like.data.statistics"):
        compute_statistics(trajectories_with(value), proprio_key=None, name="toy")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("statistics of toy: 'action' dim 1 has 1 value(s) outside")
    assert f"most extreme {value:.6g}" in warnings[0]


def test_normal_data_and_rare_flags_give_no_outlier_warning(caplog):
    flags = trajectories_with(None)
    for traj in flags:
        traj["action"][:, 2] = 0.0
    flags[3]["action"][0, 2] = 1.0  # a rare 0/1 flag: not an outlier
    with caplog.at_level(logging.WARNING, logger="octo_like.data.statistics"):
        compute_statistics(trajectories_with(None), proprio_key=None, name="toy")
        compute_statistics(flags, proprio_key=None, name="toy")
    assert not caplog.records

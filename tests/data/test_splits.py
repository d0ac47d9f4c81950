"""Split expressions checked against a dataset, Octo's 95/5 hold-out when a dataset has no `val`
split, and statistics over every split (``statistics_split="all"``), cached apart from the
training split's."""

from __future__ import annotations

import os

import numpy as np
import pytest

from octo_like.data import builder_dir, prepare, rlds, splits, synthetic
from octo_like.data.config import DataConfig, DatasetSource, FrameTransformConfig
from octo_like.data.frame_transforms import CameraTransform
from octo_like.data.oxe.spec import ActionEncoding, DatasetSpec
from octo_like.normalization import NormalizationType

WITH_VAL, ONLY_TRAIN = "splits_with_val", "splits_only_train"
SCHEMA = synthetic.RldsSchema(
    observation={"rgb": synthetic.image(8, 8), "joints": synthetic.tensor((3,))},
    step={"action": synthetic.tensor((2,)), "language_instruction": synthetic.text()},
)


def spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        image_keys={"primary": "rgb"},
        proprio_key="joints",
        action_encoding=ActionEncoding.CUSTOM,
        action_normalization_mask=(True, True),
        standardize="identity",
    )


SPECS = {name: spec(name) for name in (WITH_VAL, ONLY_TRAIN)}


def episode_of(action: np.ndarray) -> int:
    """The written episode an action row comes from (`write`: 100 * episode + step)."""
    return int(np.asarray(action).reshape(-1)[0] // 100)


def write(
    root: str, name: str, episodes: dict[str, int], episode_length: int = 4
) -> tuple[str, dict[str, list]]:
    """`name` under `root`, actions coding their episode (numbered across splits, in split name
    order) and step, plus the actions written, per split."""
    written: dict[str, list] = {split: [] for split in episodes}
    first = {split: sum(episodes[s] for s in sorted(episodes)[:i])
             for i, split in enumerate(sorted(episodes))}  # fmt: skip

    def code(split, index, episode):
        steps = episode["steps"]
        length = len(steps["is_first"])
        noise = np.random.default_rng([len(split), index]).uniform(0, 50, (length, 2))
        action = 100.0 * (first[split] + index) + np.arange(length)[:, None] + noise
        steps["action"] = action.astype(np.float32)
        written[split].append(steps["action"].copy())

    location = synthetic.write_rlds_dataset(
        root, name, SCHEMA, episodes=episodes, episode_length=episode_length, override=code
    )
    return location, written


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    root = str(tmp_path_factory.mktemp("splits"))
    with_val = write(root, WITH_VAL, {"train": 6, "val": 2})
    only_train = write(root, ONLY_TRAIN, {"train": 20})
    return {"root": root, WITH_VAL: with_val, ONLY_TRAIN: only_train}


def data_config(name: str, location: str, cache_dir: str, **changes) -> DataConfig:
    return DataConfig(
        datasets=(DatasetSource(name, location, **changes.pop("source", {})),),
        batch_size=2,
        train=False,
        normalization=NormalizationType.NONE,
        statistics_cache_dir=cache_dir,
        frame=FrameTransformConfig(cameras={"primary": CameraTransform(size=(8, 8))}),
        extra_specs=SPECS,
        **changes,
    )


def episodes_read(builder, split: str) -> set[int]:
    return {
        episode_of(t["action"][0])
        for t in rlds.read_episodes(builder, split, shuffle_files=False).as_numpy_iterator()
    }


def test_split_names_cover_slices_unions_and_all(datasets):
    builder = builder_dir.open_source(datasets[WITH_VAL][0], WITH_VAL)
    assert splits.split_names(builder, "train[:95%]") == ["train"]
    assert splits.split_names(builder, "all") == ["train", "val"]
    assert splits.split_names(builder, "val+train[:50%]") == ["val", "train"]
    assert episodes_read(builder, "all") == set(range(8))  # TFDS reads "all": every split


def test_a_dataset_with_a_val_split_validates_on_it(datasets):
    builder = builder_dir.open_source(datasets[WITH_VAL][0], WITH_VAL)
    assert splits.holdout_splits(builder, "train") == ("train", "val")
    assert episodes_read(builder, "val") == {6, 7}  # numbered after train's 0..5


def test_without_val_the_last_5_percent_of_train_is_held_out_disjointly(datasets):
    builder = builder_dir.open_source(datasets[ONLY_TRAIN][0], ONLY_TRAIN)
    train, val = splits.holdout_splits(builder, "train")
    assert (train, val) == ("train[:95%]", "train[95%:]")
    trained, held_out = episodes_read(builder, train), episodes_read(builder, val)
    assert len(held_out) == 1 and len(trained) == 19  # 5% of 20
    assert not trained & held_out and trained | held_out == set(range(20))


def test_holdout_refuses_a_sliced_split_and_a_typo(datasets):
    builder = builder_dir.open_source(datasets[ONLY_TRAIN][0], ONLY_TRAIN)
    with pytest.raises(ValueError, match=r"'train\[:50%\]' is not a plain split name"):
        splits.holdout_splits(builder, "train[:50%]")
    with pytest.raises(ValueError, match=rf"{ONLY_TRAIN!r} has no split 'trian'.*\['train'\]"):
        splits.holdout_splits(builder, "trian")


def numpy_statistics(actions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    stacked = np.concatenate(actions).astype(np.float64)
    return stacked.mean(0), stacked.std(0)


def test_statistics_over_all_splits_are_those_of_every_episode_and_cached_apart(datasets, tmp_path):
    location, written = datasets[WITH_VAL]
    cache = str(tmp_path / "stats")
    on_train = data_config(WITH_VAL, location, cache)
    on_all = data_config(WITH_VAL, location, cache, statistics_split="all")
    source = on_train.datasets[0]
    assert prepare.statistics_split_of(source, on_train) == "train"
    assert prepare.statistics_split_of(source, on_all) == "all"

    train_stats = prepare.prepare_dataset(source, on_train).statistics  # cached first
    all_stats = prepare.prepare_dataset(source, on_all).statistics  # not the cached train's
    mean, std = numpy_statistics(written["train"] + written["val"])
    np.testing.assert_allclose(all_stats.action.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(all_stats.action.std, std, rtol=1e-4)
    assert all_stats.num_trajectories == 8
    mean, std = numpy_statistics(written["train"])
    np.testing.assert_allclose(train_stats.action.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(train_stats.action.std, std, rtol=1e-4)
    assert not np.allclose(all_stats.action.mean, train_stats.action.mean, rtol=1e-3)

    # Two cache entries, one per split; each read back as its own.
    assert len([f for f in os.listdir(cache) if f.endswith(".json")]) == 2
    builder = builder_dir.open_source(location, WITH_VAL)
    assert prepare.statistics_fingerprint_for(
        builder, SPECS[WITH_VAL], "all"
    ) != prepare.statistics_fingerprint_for(builder, SPECS[WITH_VAL], "train")
    for config, expected in ((on_all, all_stats), (on_train, train_stats)):
        again = prepare.prepare_dataset(source, config).statistics
        np.testing.assert_array_equal(again.action.mean, expected.action.mean)

    # Slices of one split are keyed apart too (their shards are the same files).
    location, written = datasets[ONLY_TRAIN]
    for split, count in (("train", 20), ("train[:95%]", 19), ("all", 20)):
        config = data_config(ONLY_TRAIN, location, cache, statistics_split=split)
        assert prepare.prepare_dataset(config.datasets[0], config).statistics.num_trajectories == (
            count
        ), split


def test_a_typod_statistics_split_names_the_dataset_and_its_splits(datasets, tmp_path):
    location, _ = datasets[WITH_VAL]
    config = data_config(WITH_VAL, location, str(tmp_path), statistics_split="al")
    with pytest.raises(ValueError) as raised:
        prepare.prepare_dataset(config.datasets[0], config)
    message = str(raised.value)
    assert f"dataset {WITH_VAL!r} has no split 'al'" in message
    assert "['train', 'val']" in message and "'all'" in message
    assert not os.listdir(tmp_path)  # refused before anything was read or cached
    with pytest.raises(ValueError, match="statistics_split is empty"):
        data_config(WITH_VAL, location, str(tmp_path), statistics_split=" ")

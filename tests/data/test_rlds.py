"""Reading RLDS: builders, splits, episodes -> trajectories, the synthetic writer, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from octo_like.data import builder_dir, rlds, synthetic
from octo_like.data.dataset import Parallelism, TrajectoryDataset, element_seeds
from tests.data.conftest import TOY_SCHEMA


def test_open_builder_from_directory_and_by_name(synthetic_root, bridge_dir):
    assert builder_dir.open_builder(bridge_dir).info.name == "bridge_dataset"
    by_name = builder_dir.open_builder("toy_a", data_dir=synthetic_root)
    assert by_name.info.name == "toy_a"
    pinned = builder_dir.open_builder("toy_a:1.0.0", data_dir=synthetic_root)
    assert str(pinned.info.version) == "1.0.0"
    assert builder_dir.open_source(synthetic_root, "toy_b").info.name == "toy_b"


def test_open_builder_unknown_name_lists_close_names(synthetic_root):
    with pytest.raises(FileNotFoundError, match="close names: toy_a"):
        builder_dir.open_builder("toy_aa", data_dir=synthetic_root)
    with pytest.raises(FileNotFoundError, match="no data_dir"):
        builder_dir.open_builder("toy_a")


def test_unknown_split_is_named(synthetic_root):
    builder = builder_dir.open_builder("toy_b", data_dir=synthetic_root)
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['train'\]"):
        rlds.read_episodes(builder, "validation")


def test_images_stay_encoded_and_episodes_become_trajectories(bridge_dir):
    builder = builder_dir.open_builder(bridge_dir)
    traj = next(iter(rlds.read_episodes(builder, "train", shuffle_files=False)))
    assert sorted(traj["observation"]) == ["image_0", "image_1", "image_2", "image_3", "state"]
    assert traj["observation"]["image_0"].numpy()[0].startswith(b"\xff\xd8")  # JPEG bytes
    assert traj["observation"]["image_0"].dtype == tf.string
    assert traj["observation"]["image_0"].shape == (10,)
    assert traj["action"].shape == (10, 7)
    assert traj["is_first"].shape == (10,)
    assert traj["is_first"].numpy().tolist() == [True] + [False] * 9
    assert traj["tfds_id"].numpy().startswith(b"bridge_dataset-train")


def test_zero_length_episode_gives_an_empty_trajectory(synthetic_root):
    builder = builder_dir.open_builder("toy_zero", data_dir=synthetic_root)
    episodes = rlds.read_episodes(builder, "train", shuffle_files=False)
    lengths = sorted(int(t["action"].shape[0]) for t in episodes)
    assert lengths == [0, 6, 6, 6]


def test_synthetic_writer_is_deterministic_and_applies_overrides(tmp_path):
    def read(root, name):
        builder = builder_dir.open_builder(name, data_dir=root)
        episodes = rlds.read_episodes(builder, "train", shuffle_files=False)
        return [t["action"].numpy() for t in episodes]

    def mark(split, index, episode):
        episode["steps"]["action"][:] = index

    a = synthetic.write_rlds_dataset(str(tmp_path / "a"), "w", TOY_SCHEMA, episodes={"train": 2})
    b = synthetic.write_rlds_dataset(str(tmp_path / "b"), "w", TOY_SCHEMA, episodes={"train": 2})
    assert a != b
    for x, y in zip(read(str(tmp_path / "a"), "w"), read(str(tmp_path / "b"), "w"), strict=True):
        np.testing.assert_array_equal(x, y)
    synthetic.write_rlds_dataset(
        str(tmp_path / "c"), "w", TOY_SCHEMA, episodes={"train": 2}, override=mark
    )
    values = sorted(float(x[0, 0]) for x in read(str(tmp_path / "c"), "w"))
    assert values == [0.0, 1.0]


def test_element_seeds_are_deterministic_and_distinct():
    dataset = tf.data.Dataset.range(50)
    seeds = [s.numpy() for _, s in element_seeds(dataset, seed=3, salt=1)]
    again = [s.numpy() for _, s in element_seeds(dataset, seed=3, salt=1)]
    other_salt = [s.numpy() for _, s in element_seeds(dataset, seed=3, salt=2)]
    np.testing.assert_array_equal(seeds, again)
    assert len({tuple(s) for s in seeds}) == 50
    assert not np.array_equal(seeds, other_salt)


def test_flatten_yields_every_frame_once():
    trajectories = tf.data.Dataset.from_tensor_slices(tf.constant([3, 1, 4], tf.int64)).map(
        lambda n: {"t": tf.range(n), "n": tf.fill([n], n)}
    )
    frames = TrajectoryDataset(trajectories, "toy", Parallelism()).flatten()
    seen = sorted((int(f["n"]), int(f["t"])) for f in frames.dataset)
    assert seen == [(1, 0), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3)]


def test_parallelism_is_validated_and_shared_out():
    with pytest.raises(ValueError, match="read"):
        Parallelism(read=0)
    share = Parallelism(read=8, trajectory=8, frame=4).scaled(0.25)
    assert (share.read, share.trajectory, share.frame) == (2, 2, 4)
    assert Parallelism(read=2).scaled(0.01).read == 1


def test_unset_thread_counts_scale_with_the_host():
    laptop = Parallelism(cpu_count=2)
    assert (laptop.read, laptop.trajectory, laptop.frame) == (2, 2, 2)
    tpu_host = Parallelism(cpu_count=96)
    assert (tpu_host.read, tpu_host.trajectory, tpu_host.frame) == (24, 24, 48)
    pinned = Parallelism(read=3, cpu_count=96)
    assert (pinned.read, pinned.frame) == (3, 48)

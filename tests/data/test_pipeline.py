"""End-to-end behaviour of the input pipeline: layout, masks, determinism, mixtures, bad input."""

from __future__ import annotations

import collections
import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from octo_like.data import builder_dir, rlds
from octo_like.data.config import (
    CameraTransform,
    DataConfig,
    DatasetSource,
    FrameTransformConfig,
    NormalizationType,
    TrajectoryTransformConfig,
)
from octo_like.data.oxe.mixes import resolve_mix
from octo_like.data.pipeline import make_pipeline
from octo_like.data.prepare import standardized_trajectories
from octo_like.data.presets import single_dataset_config
from octo_like.data.validation import EMPTY_EPISODE, DataError, SkippedEpisodes
from tests.data.conftest import one_camera_spec, toy_spec

SMALL_CAMERAS = {
    "primary": CameraTransform(size=(32, 32)),
    "wrist": CameraTransform(size=(16, 16)),
}


def toy_config(root, names=("toy_a",), **overrides) -> DataConfig:
    specs = {n: toy_spec(n) for n in names if n != "toy_b"}
    specs["toy_b"] = one_camera_spec("toy_b")
    defaults = dict(
        datasets=tuple(DatasetSource(n, root) for n in names),
        batch_size=8,
        shuffle_buffer=64,
        frame=FrameTransformConfig(cameras=SMALL_CAMERAS),
        extra_specs=specs,
    )
    defaults.update(overrides)
    return DataConfig(**defaults)


def test_bridge_batches_have_the_documented_layout(bridge_dir, stats_dir):
    config = single_dataset_config(
        bridge_dir,
        "bridge_dataset",
        batch_size=4,
        primary_size=64,
        wrist_size=32,
        shuffle_buffer=100,
        statistics_cache_dir=stats_dir,
    )
    pipeline = make_pipeline(config)
    batch = next(iter(pipeline))
    obs, task = batch["observation"], batch["task"]
    assert obs["image_primary"].shape == (4, 2, 64, 64, 3)
    assert obs["image_primary"].dtype == np.uint8
    assert obs["image_wrist"].shape == (4, 2, 32, 32, 3)
    assert obs["proprio"].shape == (4, 2, 7) and obs["proprio"].dtype == np.float32
    assert obs["timestep"].shape == (4, 2)
    assert obs["timestep_pad_mask"].shape == (4, 2) and obs["timestep_pad_mask"].dtype == bool
    assert obs["pad_mask_dict"]["image_primary"].shape == (4, 2)
    # Bridge has no wrist camera: padded with zeros and masked.
    assert not obs["pad_mask_dict"]["image_wrist"].any()
    assert (obs["image_wrist"] == 0).all()
    assert obs["image_primary"].std() > 5
    assert task["language_instruction"].shape == (4,)
    assert all(isinstance(s, bytes) and s for s in task["language_instruction"])
    assert task["image_primary"].shape == (4, 64, 64, 3)
    assert batch["action"].shape == (4, 2, 4, 7) and batch["action"].dtype == np.float32
    assert batch["action_pad_mask"].shape == (4, 2, 4, 7)
    assert batch["dataset_name"].tolist() == [b"bridge_dataset"] * 4
    assert np.isfinite(batch["action"]).all()
    assert set(pipeline.statistics) == {"bridge_dataset"}
    assert pipeline.statistics["bridge_dataset"].num_trajectories == 25


def test_episode_ends_index_by_index(synthetic_root, stats_dir):
    """Unshuffled frames of 5-step episodes whose actions encode their time index."""
    config = toy_config(
        synthetic_root,
        names=("toy_indexed",),
        train=False,
        batch_size=5,
        normalization=NormalizationType.NONE,
        statistics_cache_dir=stats_dir,
        trajectory=TrajectoryTransformConfig(window=2, action_horizon=3),
    )
    # Frames of several episodes alternate (dataset.TRAJECTORIES_INTERLEAVED), each episode's
    # in order: the first episode's 5 frames, picked out of the first batches.
    batches = list(itertools.islice(iter(make_pipeline(config)), 20))
    frames = concat_frames(batches)
    episodes = (frames["action"][:, 1, 0, 0] // 100).astype(int)
    episode = int(episodes[0])
    batch = take_frames(frames, np.flatnonzero(episodes == episode)[:5])
    assert len(batch["action"]) == 5
    action_t = batch["action"][..., 0] - 100 * episode  # [frame, window, horizon]
    # Frame 0: window step 0 is before the episode start.
    np.testing.assert_array_equal(batch["observation"]["timestep_pad_mask"][0], [False, True])
    assert not batch["action_pad_mask"][0, 0].any()
    np.testing.assert_array_equal(action_t[0, 1], [0, 1, 2])
    np.testing.assert_array_equal(batch["action_pad_mask"][0, 1, :, 0], [True, True, True])
    # Frame 2 is fully inside the episode.
    np.testing.assert_array_equal(action_t[2], [[1, 2, 3], [2, 3, 4]])
    assert batch["action_pad_mask"][2, 0].all()
    np.testing.assert_array_equal(batch["action_pad_mask"][2, 1, :, 0], [True, True, True])
    # Frame 3: the last chunk runs one step past the end (index 5 > 4).
    np.testing.assert_array_equal(batch["action_pad_mask"][3, 1, :, 0], [True, True, False])
    # Frame 4 (the last): its chunk repeats the final action where padded, and is masked.
    np.testing.assert_array_equal(batch["observation"]["timestep"][4], [3, 4])
    np.testing.assert_array_equal(action_t[4, 1], [4, 4, 4])
    np.testing.assert_array_equal(batch["action_pad_mask"][4, 1, :, 0], [True, False, False])
    np.testing.assert_array_equal(batch["action_pad_mask"][4, 0, :, 0], [True, True, False])
    # The action dims encode dim / 10, so dims were not shuffled.
    np.testing.assert_allclose(
        batch["action"][2, 1, 0] - batch["action"][2, 1, 0, 0], np.arange(7) / 10, atol=1e-5
    )


def concat_frames(batches: list) -> dict:
    """The frames of `batches`, concatenated along the batch axis (numpy only)."""
    return tf.nest.map_structure(lambda *leaves: np.concatenate(leaves), *batches)


def take_frames(frames: dict, indices: np.ndarray) -> dict:
    return tf.nest.map_structure(lambda leaf: leaf[indices], frames)


def first_batches(config, count=3):
    return list(itertools.islice(iter(make_pipeline(config)), count))


def assert_trees_equal(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_seed_same_batches_different_seed_different(synthetic_root, stats_dir):
    config = toy_config(synthetic_root, statistics_cache_dir=stats_dir)
    first, second = first_batches(config), first_batches(config)
    assert_trees_equal(first, second)
    other = first_batches(dataclasses.replace(config, seed=7))
    assert not np.array_equal(first[0]["action"], other[0]["action"])


def test_mixture_frequencies_follow_weights(synthetic_root, stats_dir):
    config = toy_config(
        synthetic_root,
        names=("toy_a", "toy_b"),
        batch_size=32,
        statistics_cache_dir=stats_dir,
        datasets=(
            DatasetSource("toy_a", synthetic_root, weight=3.0),
            DatasetSource("toy_b", synthetic_root, weight=1.0),
        ),
    )
    pipeline = make_pipeline(config)
    assert pipeline.weights == pytest.approx({"toy_a": 0.75, "toy_b": 0.25})
    counts = collections.Counter()
    for batch in itertools.islice(iter(pipeline), 30):
        counts.update(batch["dataset_name"].tolist())
        # toy_b has 4 action dims and one camera: padded to 7 dims and masked.
        is_b = batch["dataset_name"] == b"toy_b"
        assert not batch["action_pad_mask"][is_b][..., 4:].any()
        assert not batch["observation"]["pad_mask_dict"]["image_wrist"][is_b].any()
        assert batch["observation"]["proprio_pad_mask"][is_b][..., 3:].sum() == 0
    fraction_a = counts[b"toy_a"] / sum(counts.values())
    # 960 independent draws: the binomial std is 0.014; allow 4 sigma.
    assert abs(fraction_a - 0.75) < 0.056, counts


def test_balance_by_size_weights_by_transitions(synthetic_root, stats_dir):
    config = toy_config(
        synthetic_root,
        names=("toy_a", "toy_b"),
        statistics_cache_dir=stats_dir,
        balance_by_size=True,
    )
    pipeline = make_pipeline(config)
    sizes = {n: s.num_transitions for n, s in pipeline.statistics.items()}
    expected = sizes["toy_a"] / (sizes["toy_a"] + sizes["toy_b"])
    assert pipeline.weights["toy_a"] == pytest.approx(expected)


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover_the_split(bridge_dir, count):
    builder = builder_dir.open_builder(bridge_dir)
    spec_config = single_dataset_config(bridge_dir, "bridge_dataset")
    from octo_like.data.oxe.registry import get_dataset_spec

    spec = get_dataset_spec("bridge_dataset")
    seen = []
    for index in range(count):
        trajectories = standardized_trajectories(
            builder, spec, "train", spec_config.cameras, shard=rlds.ProcessShard(index, count)
        )
        seen.append({t["episode_id"] for t in trajectories.dataset.as_numpy_iterator()})
    for a, b in itertools.combinations(seen, 2):
        assert not a & b
    assert sum(len(s) for s in seen) == 25
    assert len(set().union(*seen)) == 25


def test_per_process_batch_is_computed_not_configured(synthetic_root):
    config = toy_config(synthetic_root, batch_size=32)
    assert config.per_process_batch_size(4) == 8
    assert config.batch_size == 32
    with pytest.raises(ValueError, match="not divisible"):
        config.per_process_batch_size(3)


def test_nan_actions_raise_naming_dataset_and_episode(synthetic_root, stats_dir):
    config = toy_config(synthetic_root, names=("toy_nan",), statistics_cache_dir=stats_dir)
    expected = r"dataset 'toy_nan', episode .*__\d+: NaN/Inf in raw 'action'"
    with pytest.raises(DataError, match=expected):
        first_batches(config, count=2)


def test_nan_episode_skipped_and_counted_when_asked(synthetic_root, stats_dir, caplog):
    config = toy_config(
        synthetic_root,
        names=("toy_nan",),
        statistics_cache_dir=stats_dir,
        skip_bad_episodes=True,
    )
    pipeline = make_pipeline(config)
    batches = list(itertools.islice(iter(pipeline), 4))
    assert all(np.isfinite(b["action"]).all() for b in batches)
    assert pipeline.skipped.counts[("toy_nan", "NaN/Inf in raw 'action' at step 3")] >= 1
    assert "skipped episode" in caplog.text and "toy_nan" in caplog.text


def test_zero_length_episode_is_skipped_and_counted(synthetic_root, stats_dir):
    config = toy_config(synthetic_root, names=("toy_zero",), statistics_cache_dir=stats_dir)
    pipeline = make_pipeline(config)
    assert len(list(itertools.islice(iter(pipeline), 2))) == 2
    assert pipeline.skipped.counts[("toy_zero", EMPTY_EPISODE)] >= 1


@pytest.mark.parametrize("skip_bad_episodes", [False, True])  # True adds the decode check
def test_a_zero_length_episode_is_dropped_without_tf_datas_graph_optimizations(
    synthetic_root, skip_bad_episodes
):
    """The empty-episode check runs after the raw checks and the standardizer, so none of them
    may fail on zero steps. The image-size check took an argmax over the steps whatever it found
    ("Reduction axis 0 is empty"), which only tf.data's graph optimizations pruned."""
    source = DatasetSource("toy_zero", synthetic_root)
    skipped = SkippedEpisodes()
    trajectories = standardized_trajectories(
        builder_dir.open_source(source.location, source.name), toy_spec("toy_zero"), source.split,
        tuple(SMALL_CAMERAS), skip_bad_episodes=skip_bad_episodes, skipped=skipped,
    ).dataset  # fmt: skip
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    episodes = list(trajectories.with_options(options).as_numpy_iterator())
    assert episodes and all(len(episode["action"]) > 0 for episode in episodes)
    assert skipped.counts[("toy_zero", EMPTY_EPISODE)] >= 1


def test_undecodable_image_raises_naming_the_dataset(synthetic_root, stats_dir):
    config = toy_config(
        synthetic_root,
        names=("toy_badimg",),
        statistics_cache_dir=stats_dir,
        skip_bad_episodes=False,
    )
    expected = r"undecodable image bytes .* in dataset 'toy_badimg' episode \d+ .* 'primary'"
    with pytest.raises(DataError, match=expected):
        first_batches(config, count=3)


def test_configured_image_key_missing_from_dataset(synthetic_root, stats_dir):
    config = toy_config(synthetic_root, statistics_cache_dir=stats_dir)
    bad = dataclasses.replace(
        toy_spec("toy_a"), image_keys={"primary": "image_O", "wrist": "wrist"}
    )
    config = dataclasses.replace(config, extra_specs={"toy_a": bad})
    with pytest.raises(DataError, match=r"toy_a.*'image_O'.*image_0"):
        make_pipeline(config)


def test_unknown_dataset_in_mix_lists_close_names():
    with pytest.raises((KeyError, ValueError), match="bridge_dataset"):
        resolve_mix([("bridge_datset", 1.0)])


def test_datasets_of_one_schema_share_a_trace_but_keep_their_statistics(
    synthetic_root, stats_dir, monkeypatch
):
    """The trajectory transform is traced once per trajectory signature (toy_a and toy_indexed
    share one, toy_b has its own): each dataset's normalization comes in as tensors, so
    toy_indexed, whose map reuses the trace made for toy_a, is still normalized with its own
    statistics (unnormalized with them, its actions show their index code t + dim / 10)."""
    from octo_like.data import traj_transforms
    from octo_like.normalization import unnormalize_np

    traced = []
    window_and_chunk = traj_transforms.window_and_chunk
    monkeypatch.setattr(
        traj_transforms,
        "window_and_chunk",
        lambda traj, *args, **kwargs: traced.append(1) or window_and_chunk(traj, *args, **kwargs),
    )
    config = toy_config(
        synthetic_root,
        names=("toy_a", "toy_indexed", "toy_b"),
        batch_size=32,
        statistics_cache_dir=stats_dir,
    )
    pipeline = make_pipeline(config)
    assert len(traced) == 2
    statistics = pipeline.statistics["toy_indexed"]
    assert statistics != pipeline.statistics["toy_a"]
    mask = toy_spec("toy_indexed").action_normalization_mask
    checked = 0
    for batch in itertools.islice(iter(pipeline), 4):
        rows = batch["dataset_name"] == b"toy_indexed"
        valid = batch["action_pad_mask"][rows].all(axis=-1)
        raw = unnormalize_np(batch["action"][rows], statistics.action, "normal", mask)[valid]
        np.testing.assert_allclose(raw - raw[:, :1], np.tile(np.arange(7) / 10, (len(raw), 1)),
                                   atol=2e-3)  # fmt: skip
        np.testing.assert_allclose(raw[:, 0], np.round(raw[:, 0]), atol=2e-3)
        checked += len(raw)
    assert checked > 10

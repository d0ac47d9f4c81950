"""Streaming statistics against numpy, the JSON format, the cache and the fingerprint."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data import statistics, statistics_cache
from octo_like.data.statistics import HISTOGRAM_BINS, compute_statistics
from octo_like.data.statistics_cache import (
    dataset_identity,
    load_or_compute_statistics,
    statistics_fingerprint,
)
from octo_like.normalization import ArrayStatistics, DatasetStatistics

ACTION_DIM, PROPRIO_DIM = 6, 3


def _make_trajectories(seed: int = 0, count: int = 60) -> list[dict]:
    """Standardized-like trajectories whose action dims stress different parts of the code."""
    rng = np.random.default_rng(seed)
    trajectories = []
    for i in range(count):
        length = 0 if i == 5 else int(rng.integers(1, 40))
        action = np.stack(
            [
                rng.normal(0.0, 1.0, length),
                1e4 + rng.normal(0.0, 0.01, length),  # large offset: naive sums cancel
                rng.exponential(2.0, length),  # skewed
                np.full(length, 0.5),  # constant
                np.where(rng.random(length) < 0.5, -3.0, 7.0) + rng.normal(0, 0.1, length),
                rng.normal(0.0, 1.0, length) * 1.1**i,  # range grows: histogram re-bins
            ],
            axis=-1,
        )
        trajectories.append(
            {
                "action": action.astype(np.float32).reshape(length, ACTION_DIM),
                "observation": {
                    "proprio": rng.normal(2.0, 3.0, (length, PROPRIO_DIM)).astype(np.float32),
                    "image_primary": np.array([b"jpeg"] * length, dtype=object),
                },
                "dataset_name": np.array([b"toy"] * length, dtype=object),
                "episode_index": np.full(length, i, np.int64),
            }
        )
    return trajectories


def _as_dataset(trajectories: list[dict]) -> tf.data.Dataset:
    signature = {
        "action": tf.TensorSpec([None, ACTION_DIM], tf.float32),
        "observation": {
            "proprio": tf.TensorSpec([None, PROPRIO_DIM], tf.float32),
            "image_primary": tf.TensorSpec([None], tf.string),
        },
        "dataset_name": tf.TensorSpec([None], tf.string),
        "episode_index": tf.TensorSpec([None], tf.int64),
    }
    return tf.data.Dataset.from_generator(lambda: iter(trajectories), output_signature=signature)


@pytest.fixture(scope="module")
def trajectories() -> list[dict]:
    return _make_trajectories()


@pytest.fixture(scope="module")
def concatenated(trajectories) -> dict[str, np.ndarray]:
    return {
        "action": np.concatenate([t["action"] for t in trajectories]).astype(np.float64),
        "proprio": np.concatenate([t["observation"]["proprio"] for t in trajectories]).astype(
            np.float64
        ),
    }


@pytest.fixture(scope="module")
def stats(trajectories) -> DatasetStatistics:
    return compute_statistics(trajectories)


def _bin_width_bound(x: np.ndarray) -> np.ndarray:
    """The documented bound on the final histogram bin width, per dimension."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    return np.maximum(2 * (hi - lo) / (HISTOGRAM_BINS - 2), np.maximum(-lo, hi) * 2.0**-49)


@pytest.mark.parametrize("chunk_rows", [1, 7, 100_000])
def test_moments_match_numpy(trajectories, concatenated, monkeypatch, chunk_rows):
    # Small chunks exercise the Chan merge and the histogram re-binning on every trajectory.
    monkeypatch.setattr(statistics, "_CHUNK_ROWS", chunk_rows)
    result = compute_statistics(trajectories)
    for key, got in (("action", result.action), ("proprio", result.proprio)):
        x = concatenated[key]
        np.testing.assert_allclose(got.mean, x.mean(0).astype(np.float32), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got.std, x.std(0).astype(np.float32), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got.min, x.min(0).astype(np.float32))
        np.testing.assert_array_equal(got.max, x.max(0).astype(np.float32))
        for field, q in (("p01", 1), ("p99", 99)):
            error = np.abs(getattr(got, field) - np.percentile(x, q, axis=0))
            assert np.all(error <= _bin_width_bound(x)), (key, field, error)
    assert result.action.std[3] == 0.0 and result.action.p01[3] == result.action.p99[3] == 0.5


def test_percentile_interpolates_across_gaps_like_numpy():
    # p99 of 50 zeros and one 1000 lies halfway between them; a per-bin estimate would not.
    values = np.concatenate([np.zeros(50), [1000.0]]).astype(np.float32)
    result = compute_statistics([{"action": values[:, None]}], proprio_key=None)
    assert np.percentile(values, 99) == 500.0
    bound = 2 * 1000 / (HISTOGRAM_BINS - 2)
    assert abs(float(result.action.p99[0]) - 500.0) <= bound
    assert 0.0 <= result.action.p01[0] <= bound


def test_counts(stats, trajectories):
    assert stats.num_trajectories == len(trajectories) == 60  # the empty one counts
    assert stats.num_transitions == sum(len(t["action"]) for t in trajectories)
    assert stats.action.dim == ACTION_DIM and stats.proprio.dim == PROPRIO_DIM


def test_dataset_iterable_and_iterator_agree(stats, trajectories):
    from_dataset = compute_statistics(_as_dataset(trajectories))
    from_iterator = compute_statistics(t for t in trajectories)  # one-shot: one pass suffices
    assert from_dataset == stats
    assert from_iterator == stats


def test_json_round_trip_is_exact(stats, tmp_path):
    path = str(tmp_path / "sub" / "stats.json")
    stats.save_json(path)
    loaded = DatasetStatistics.load_json(path)
    assert loaded == stats
    assert loaded.action.mean.dtype == np.float32
    assert DatasetStatistics.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert [p for p in os.listdir(tmp_path / "sub")] == ["stats.json"]  # no temporary left


def test_bad_statistics_dicts_are_rejected(stats, tmp_path):
    d = stats.to_dict()
    del d["action"]["p99"]
    with pytest.raises(ValueError, match="p99"):
        DatasetStatistics.from_dict(d)
    with pytest.raises(ValueError, match="different lengths"):
        ArrayStatistics(*([np.zeros(3)] * 5 + [np.zeros(4)]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        DatasetStatistics.load_json(str(tmp_path / "bad.json"))


def test_no_data_is_an_error():
    with pytest.raises(ValueError, match="no trajectories"):
        compute_statistics([])
    with pytest.raises(ValueError, match="empty"):
        compute_statistics([{"action": np.zeros((0, 2), np.float32)}], proprio_key=None)


@pytest.mark.parametrize("as_dataset", [False, True])
def test_non_finite_values_name_key_and_trajectory(as_dataset):
    trajectories = _make_trajectories(count=6)
    trajectories[3]["action"][2, 4] = np.nan
    data = _as_dataset(trajectories) if as_dataset else trajectories
    with pytest.raises(ValueError, match=r"trajectory 3 .*episode_index=3.*'action'.*non-finite"):
        compute_statistics(data)
    trajectories = _make_trajectories(count=6)
    trajectories[4]["observation"]["proprio"][0, 1] = np.inf
    data = _as_dataset(trajectories) if as_dataset else trajectories
    with pytest.raises(ValueError, match=r"trajectory 4\b.*'observation/proprio'.*inf"):
        compute_statistics(data)


def test_bad_structure_is_an_error(trajectories):
    with pytest.raises(KeyError, match="'actions'"):
        compute_statistics(_as_dataset(trajectories), action_key="actions")
    with pytest.raises(KeyError, match="observation/state"):
        compute_statistics(trajectories, proprio_key=("observation", "state"))
    changed = [trajectories[0], {**trajectories[1], "action": np.zeros((4, 5), np.float32)}]
    with pytest.raises(ValueError, match="trajectory 1.*5 dims, earlier trajectories had 6"):
        compute_statistics(changed)
    with pytest.raises(ValueError, match="numeric"):
        compute_statistics([{"action": np.zeros(4, np.float32)}], proprio_key=None)


def test_missing_proprio_gives_none(trajectories):
    no_proprio = [
        {"action": t["action"], "observation": {"proprio": np.zeros((len(t["action"]), 0))}}
        for t in trajectories[:5]
    ]
    assert compute_statistics(no_proprio).proprio is None
    assert compute_statistics(trajectories[:5], proprio_key=None).proprio is None


def test_progress_is_logged(trajectories, monkeypatch, caplog):
    monkeypatch.setattr(statistics, "_PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger=statistics.__name__):
        compute_statistics(trajectories[:3], progress=True)
    assert any("3 trajectories" in r.getMessage() for r in caplog.records)


def test_cache_hit_force_and_fingerprints(trajectories, stats, tmp_path, caplog):
    calls = []

    def make():
        calls.append(1)
        return _as_dataset(trajectories)

    cache = str(tmp_path / "cache")
    fingerprint = statistics_fingerprint({"name": "toy"}, {"proprio": "state"})
    with caplog.at_level(logging.INFO, logger=statistics_cache.__name__):
        first = load_or_compute_statistics(
            make, fingerprint=fingerprint, cache_dir=cache, name="toy"
        )
        assert "computing (cache miss)" in caplog.text
        caplog.clear()
        second = load_or_compute_statistics(
            make, fingerprint=fingerprint, cache_dir=cache, name="toy"
        )
        assert "loaded from cache" in caplog.text
    assert len(calls) == 1 and first == second == stats
    assert os.listdir(cache) == [f"toy_{fingerprint}.json"]

    load_or_compute_statistics(
        make, fingerprint=fingerprint, cache_dir=cache, name="toy", force=True
    )
    assert len(calls) == 2

    other = statistics_fingerprint({"name": "toy"}, {"proprio": "joints"})
    load_or_compute_statistics(make, fingerprint=other, cache_dir=cache, name="toy")
    assert len(calls) == 3
    assert sorted(os.listdir(cache)) == sorted([f"toy_{fingerprint}.json", f"toy_{other}.json"])

    # A damaged cache file is recomputed (with a warning), not trusted or fatal.
    with open(os.path.join(cache, f"toy_{other}.json"), "w") as f:
        f.write('{"action": ')
    with caplog.at_level(logging.WARNING, logger=statistics_cache.__name__):
        again = load_or_compute_statistics(make, fingerprint=other, cache_dir=cache, name="toy")
    assert len(calls) == 4 and again == stats and "unreadable cache" in caplog.text


def test_cache_path_validation(tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        load_or_compute_statistics(list, fingerprint="../x", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="path separators"):
        load_or_compute_statistics(list, fingerprint="ab", cache_dir=str(tmp_path), name="a/b")


def test_fingerprint_is_stable_and_sensitive():
    info = {"name": "toy", "version": "1.0.0", "splits": {"train": 10}}
    transforms = {"standardize": "toy_standardize", "proprio": ("observation", "state")}
    fingerprint = statistics_fingerprint(info, transforms)
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert statistics_fingerprint(dict(reversed(info.items())), dict(transforms)) == fingerprint
    assert statistics_fingerprint(info, {**transforms, "standardize": "other"}) != fingerprint
    assert statistics_fingerprint({**info, "splits": {"train": 11}}, transforms) != fingerprint
    with pytest.raises(TypeError, match=r"transforms\.fn"):
        statistics_fingerprint(info, {"fn": lambda x: x})


def test_fingerprint_of_a_tfds_directory(bridge_dir):
    builder = tfds.builder_from_directory(bridge_dir)
    identity = dataset_identity(bridge_dir)
    assert identity["name"] == "bridge_dataset" and identity["version"] == "1.0.0"
    assert identity["splits"]["train"]["num_examples"] == 25
    assert identity == dataset_identity(builder.info)
    assert statistics_fingerprint(bridge_dir, {}) == statistics_fingerprint(identity, {})
    with pytest.raises(ValueError, match="not a prepared TFDS dataset"):
        dataset_identity(os.path.dirname(bridge_dir))


def test_statistics_of_the_bridge_shard(bridge_dir):
    builder = tfds.builder_from_directory(bridge_dir)
    skip = {f"image_{i}": tfds.decode.SkipDecoding() for i in range(4)}
    episodes = builder.as_dataset("train", decoders={"steps": {"observation": skip}})
    trajectories = episodes.flat_map(lambda episode: episode["steps"].batch(10_000)).map(
        lambda steps: {
            "action": steps["action"],
            "observation": {"proprio": steps["observation"]["state"]},
        }
    )
    result = compute_statistics(trajectories)
    assert result.num_trajectories == 25 and result.num_transitions == 250
    actions = np.concatenate([t["action"] for t in trajectories.as_numpy_iterator()])
    np.testing.assert_allclose(result.action.mean, actions.astype(np.float64).mean(0), rtol=1e-5)
    assert result.proprio.dim == 7

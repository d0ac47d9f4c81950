"""Normalization: round trips, masks, degenerate dims, and tf / numpy twins that agree."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from octo_like.data.normalize import normalize_trajectory
from octo_like.data.statistics import compute_statistics
from octo_like.normalization import (
    EPS,
    DatasetStatistics,
    NormalizationType,
    normalize_np,
    normalize_tf,
    unnormalize_np,
    unnormalize_tf,
)

KINDS = [NormalizationType.NORMAL, NormalizationType.BOUNDS]
MASK = [True, False, True, True, False]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """float32[N, 5]: offsets and scales differ per dim; dim 3 is constant."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5)) * [0.01, 1.0, 50.0, 0.0, 2.0] + [0.0, -3.0, 1e3, 0.25, 1.0]
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def stats(data) -> DatasetStatistics:
    trajectories = [
        {"action": chunk, "observation": {"proprio": chunk[:, :2] * 10}}
        for chunk in np.split(data, 20)
    ]
    return compute_statistics(trajectories)


def test_normal_standardizes_and_round_trips(data, stats):
    y = normalize_np(data, stats.action, "normal")
    varying = [0, 1, 2, 4]
    np.testing.assert_allclose(y[:, varying].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y[:, varying].std(0), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(y[:, 3], 0.0)  # constant dim: std floored, no explosion
    np.testing.assert_allclose(
        unnormalize_np(y, stats.action, "normal"), data, rtol=1e-5, atol=1e-5
    )


def test_bounds_maps_percentiles_to_unit_interval_and_clips(data, stats):
    a = stats.action
    y = normalize_np(np.stack([a.p01, a.p99, a.p01 - 100, a.p99 + 100]), a, "bounds")
    varying = [0, 1, 2, 4]
    np.testing.assert_allclose(y[:, varying], [[-1] * 4, [1] * 4, [-1] * 4, [1] * 4], atol=1e-5)
    np.testing.assert_array_equal(y[:2, 3], 0.0)  # p01 == p99: maps to the middle
    inside = np.clip(data, a.p01, a.p99)
    back = unnormalize_np(normalize_np(inside, a, "bounds"), a, "bounds")
    np.testing.assert_allclose(back, inside, rtol=1e-5, atol=1e-4)
    assert np.all(np.abs(normalize_np(data, a, "bounds")) <= 1.0)


def test_degenerate_dims_stay_finite(stats):
    near = np.array([[0.0, 0.0, 0.0, 0.25 + 1e-3, 0.0]], np.float32)
    normal = normalize_np(near, stats.action, "normal")
    np.testing.assert_allclose(normal[0, 3], 1e-3 / EPS, rtol=1e-3)
    assert normalize_np(near, stats.action, "bounds")[0, 3] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_mask_leaves_dims_unchanged(data, stats, kind):
    off = ~np.array(MASK)
    for fn in (normalize_np, unnormalize_np, normalize_tf, unnormalize_tf):
        out = np.asarray(fn(data, stats.action, kind, MASK))
        np.testing.assert_array_equal(out[:, off], data[:, off])
        assert not np.allclose(out[:, ~off], data[:, ~off])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", [None, MASK])
def test_numpy_twins_match_tf_eagerly_and_in_dataset_map(data, stats, kind, mask):
    y_np = normalize_np(data, stats.action, kind, mask)
    x_np = unnormalize_np(y_np, stats.action, kind, mask)
    np.testing.assert_allclose(normalize_tf(data, stats.action, kind, mask), y_np, rtol=1e-6)
    np.testing.assert_allclose(unnormalize_tf(y_np, stats.action, kind, mask), x_np, rtol=1e-6)

    def both(x):
        y = normalize_tf(x, stats.action, kind, mask)
        return y, unnormalize_tf(y, stats.action, kind, mask)

    # Batches of [2, 50, 5] with an unknown leading shape, as inside the pipeline.
    ds = tf.data.Dataset.from_tensor_slices(data.reshape(20, 2, 50, 5)).batch(4).map(both)
    y_tf, x_tf = (
        np.concatenate(parts).reshape(-1, 5) for parts in zip(*ds.as_numpy_iterator(), strict=True)
    )
    np.testing.assert_allclose(y_tf, y_np, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x_tf, x_np, rtol=1e-6, atol=1e-6)


def test_none_is_identity(data, stats):
    assert normalize_np(data, stats.action, "none") is data
    np.testing.assert_array_equal(unnormalize_tf(data, None, NormalizationType.NONE), data)


def test_float64_input_keeps_its_dtype(data, stats):
    y = normalize_np(data.astype(np.float64), stats.action, "normal")
    assert y.dtype == np.float64
    assert normalize_tf(tf.constant(data, tf.float64), stats.action, "normal").dtype == tf.float64


def test_bad_arguments_are_clear_errors(data, stats):
    with pytest.raises(ValueError, match="must be 5 bools"):
        normalize_np(data, stats.action, "normal", [True, False])
    with pytest.raises(ValueError, match="must be 5 bools"):
        normalize_tf(data, stats.action, "bounds", [1, 0, 1, 1, 0])
    with pytest.raises(ValueError, match="has 4 dims .* statistics have 5"):
        normalize_tf(data[:, :4], stats.action, "normal")
    with pytest.raises(ValueError, match="has 4 dims .* statistics have 5"):
        unnormalize_np(data[:, :4], stats.action, "bounds")
    with pytest.raises(ValueError, match="unknown normalization 'minmax'.*'bounds'"):
        normalize_np(data, stats.action, "minmax")
    with pytest.raises(TypeError, match="float"):
        normalize_tf(np.zeros((2, 5), np.int32), stats.action, "normal")
    with pytest.raises(TypeError, match="ArrayStatistics"):
        normalize_np(data, None, "normal")


def test_unknown_last_dim_is_checked_at_run_time(data, stats):
    fn = tf.function(
        lambda x: normalize_tf(x, stats.action, "normal"),
        input_signature=[tf.TensorSpec([None, None], tf.float32)],
    )
    np.testing.assert_allclose(fn(data), normalize_np(data, stats.action, "normal"), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(data[:, :4])


def _trajectory(data: np.ndarray, proprio_dim: int = 2) -> dict:
    return {
        "action": tf.constant(data[:10]),
        "observation": {
            "proprio": tf.constant(data[:10, :proprio_dim] * 10),
            "image_primary": tf.constant([b"jpeg"] * 10),
        },
        "dataset_name": tf.constant([b"toy"] * 10),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_normalize_trajectory(data, stats, kind):
    traj = _trajectory(data)
    out = normalize_trajectory(traj, stats, kind, action_mask=MASK)
    np.testing.assert_allclose(out["action"], normalize_np(data[:10], stats.action, kind, MASK))
    np.testing.assert_allclose(
        out["observation"]["proprio"], normalize_np(data[:10, :2] * 10, stats.proprio, kind)
    )
    assert out["observation"]["image_primary"] is traj["observation"]["image_primary"]
    assert out["dataset_name"] is traj["dataset_name"]
    np.testing.assert_array_equal(traj["action"], data[:10])  # the input is not modified

    ds = tf.data.Dataset.from_tensors(traj).map(
        lambda t: normalize_trajectory(t, stats, kind, action_mask=MASK)
    )
    mapped = next(ds.as_numpy_iterator())
    np.testing.assert_allclose(mapped["action"], out["action"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mapped["observation"]["proprio"], out["observation"]["proprio"])


def test_normalize_trajectory_without_proprio(data, stats):
    no_proprio = DatasetStatistics(stats.action, None, stats.num_transitions, 20)
    traj = _trajectory(data, proprio_dim=0)
    out = normalize_trajectory(traj, no_proprio, "normal", None)
    assert out["observation"]["proprio"] is traj["observation"]["proprio"]
    with pytest.raises(ValueError, match="2 dims but the statistics have none"):
        normalize_trajectory(_trajectory(data), no_proprio, "normal", None)
    with pytest.raises(ValueError, match="normalizing 'action'.*has 4 dims"):
        normalize_trajectory({**traj, "action": traj["action"][:, :4]}, stats, "normal", None)
    with pytest.raises(ValueError, match="normalizing observation/proprio: normalization mask"):
        normalize_trajectory(_trajectory(data), stats, "normal", None, proprio_mask=[True])


def test_inference_needs_no_tensorflow(stats, tmp_path):
    """normalize_np and local load_json work in a process where TensorFlow cannot be imported."""
    path = str(tmp_path / "stats.json")
    stats.save_json(path)
    script = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np\n"
        "from octo_like.normalization import DatasetStatistics, normalize_np, unnormalize_np\n"
        f"s = DatasetStatistics.load_json({path!r})\n"
        "x = np.stack([s.action.p01, s.action.mean, s.action.p99])\n"
        "y = normalize_np(x, s.action, 'bounds')\n"
        "print(np.abs(unnormalize_np(y, s.action, 'bounds') - x).max() < 1e-3)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"

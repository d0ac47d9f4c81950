"""Octo's sampled-action metrics (octo_like/training/run/action_metrics.py) on hand-computed
chunks: values, masks of padded steps and dims (a NaN there never reaches a metric), the
gripper-change window against Octo's own rule, and the layouts they are skipped for."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from octo_like.training.run.action_metrics import ActionLayout, layout_problem, metric_sums, pooled

NAN = float("nan")


def scored(predicted, true, mask, layout=None) -> dict[str, float]:
    """The metrics of one batch, as the loop logs them (jitted, then pooled)."""
    sums = jax.jit(metric_sums, static_argnums=3)(
        np.asarray(predicted, np.float32), np.asarray(true, np.float32), np.asarray(mask), layout
    )
    for value, count in sums.values():
        assert np.isfinite(value) and np.isfinite(count)
    return pooled([jax.device_get(sums)])


def action(xyz=(0.0, 0.0, 0.0), gripper=0.0):
    return [*xyz, 0.0, 0.0, 0.0, gripper]


def test_sampled_mse_sums_squared_errors_over_dims_and_masks_padding():
    # b=1, H=2, A=3; step 1 is padded (NaN), dim 2 of step 0 is padded (NaN).
    true = [[[1.0, 2.0, NAN], [NAN, NAN, NAN]]]
    mask = [[[True, True, False], [False, False, False]]]
    predicted = [
        [[[1.0, 3.0, 50.0], [9.0, 9.0, 9.0]]],  # sample 0: (3 - 2)^2 = 1
        [[[3.0, 2.0, -7.0], [9.0, 9.0, 9.0]]],  # sample 1: (3 - 1)^2 = 4
    ]
    assert scored(predicted, true, mask) == {"sampled_mse": 2.5}


def test_xyz_angle_and_accuracy_over_moving_steps():
    true = [[action((0.1, 0, 0)), action((0.1, 0, 0)), action((0.1, 0, 0)), action((0.005, 0, 0))]]
    predicted = [
        [
            [
                action((0, 0.1, 0)),  # a right angle: wrong
                action((0.15, 0, 0)),  # same direction, 1.5x the norm: right
                action((0.3, 0, 0)),  # same direction, 3x the norm: wrong
                action((0, 0, 5.0)),  # the data does not move (< 1 cm): not scored
            ]
        ]
    ]
    mask = np.ones((1, 4, 7), bool)
    metrics = scored(predicted, true, mask, ActionLayout())
    # Octo's unit vectors v / (1e-6 + |v|) leave parallel vectors a hair apart.
    parallel = lambda a, b: math.acos(a / (a + 1e-6) * b / (b + 1e-6))  # noqa: E731
    expected = (math.pi / 2 + parallel(0.1, 0.15) + parallel(0.1, 0.3)) / 3
    assert metrics["xyz_angle"] == pytest.approx(expected, rel=1e-4)
    assert metrics["xyz_accuracy"] == pytest.approx(1 / 3)
    assert metrics["sampled_mse"] == pytest.approx((0.02 + 0.0025 + 0.04 + 25.000025) / 4)


def test_a_padded_xyz_dim_or_nan_step_is_not_scored():
    true = [[action((0.1, 0, 0)), action((NAN, NAN, NAN), NAN)]]
    mask = np.ones((1, 2, 7), bool)
    mask[0, 1] = False  # the padded step
    predicted = [[[action((0, 0.1, 0)), action((1.0, 0, 0))]]]
    metrics = scored(predicted, true, mask, ActionLayout())
    assert metrics["xyz_angle"] == pytest.approx(math.pi / 2)
    mask[0, 0, 2] = False  # a padded z dim: the xyz metrics have nothing left to score
    metrics = scored(predicted, true, mask, ActionLayout())
    assert "xyz_angle" not in metrics and "xyz_accuracy" not in metrics
    assert np.isfinite(metrics["sampled_mse"])


def test_gripping_accuracy_scores_steps_within_three_of_a_change():
    # H=8, the true gripper closes at step 4: steps 1..6 are near the change, 0 and 7 are not.
    grips = [0, 0, 0, 0, 1, 1, 1, 1]
    true = [[action((0.1, 0, 0), g) for g in grips]]
    predicted = [
        [[action((0.1, 0, 0), 0.0) for _ in grips]],  # always open: right on 1..3 of 1..6
        [[action((0.1, 0, 0), g * 0.9 + 0.05) for g in grips]],  # 0.05 / 0.95: right on 1..6
    ]
    mask = np.ones((1, 8, 7), bool)
    metrics = scored(predicted, true, mask, ActionLayout())
    assert metrics["gripping_accuracy"] == pytest.approx((3 + 6) / 12)


def test_a_padded_gripper_is_neither_a_change_nor_scored():
    grips = [0, 0, 0, 0, 0, 0, NAN, NAN]  # the episode ends after step 5
    true = [[action((0.1, 0, 0), g) for g in grips]]
    mask = np.ones((1, 8, 7), bool)
    mask[0, 6:] = False
    predicted = [[[action((0.1, 0, 0), 1.0) for _ in grips]]]
    metrics = scored(predicted, true, mask, ActionLayout())
    assert "gripping_accuracy" not in metrics  # no change: undefined, left out (not NaN)
    assert set(metrics) == {"sampled_mse", "xyz_angle", "xyz_accuracy"}


def test_gripper_change_steps_match_octos_rule_when_changes_are_apart():
    grips = np.array([0] * 10 + [1] * 10 + [0] * 10, np.float32)  # changes at 10 and 20
    closed = grips > 0.5
    # Octo (visualization_lib.py:747-771): closed(t) differs from closed(t - 3) or closed(t + 3)
    octo = (closed != np.roll(closed, 3)) | (closed != np.roll(closed, -3))
    true = np.zeros((1, 30, 7), np.float32)
    true[0, :, -1] = grips
    predicted = np.zeros((3, 1, 30, 7), np.float32)  # 3 samples, always open
    sums = metric_sums(predicted, true, np.ones((1, 30, 7), bool), ActionLayout())
    correct, count = (float(x) for x in sums["gripping_accuracy"])
    assert count == 3 * octo.sum() == 3 * 12
    assert correct == 3 * (octo & ~closed).sum()


def test_pooled_weights_batches_by_their_counts():
    first = {"sampled_mse": (2.0, 1.0), "gripping_accuracy": (0.0, 0.0)}
    second = {"sampled_mse": (1.0, 3.0), "gripping_accuracy": (0.0, 0.0)}
    assert pooled([first, second]) == {"sampled_mse": 0.75}
    assert pooled([]) == {}


def test_layouts_octos_metrics_fit_and_those_they_do_not():
    fits = layout_problem(7, {"bridge": "eef_pos"}, {"bridge": False})
    assert fits is None
    assert "14 dims" in layout_problem(14, {"aloha": "joint_pos_bimanual"}, {"aloha": False})
    assert "'my_robot'" in layout_problem(7, {"my_robot": "custom"}, {"my_robot": False})
    assert "normalize the gripper" in layout_problem(7, {"b": "eef_pos"}, {"b": True})

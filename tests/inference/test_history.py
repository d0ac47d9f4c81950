"""ObservationHistory: window layout, start-of-episode padding, per-key masks, batching."""

from __future__ import annotations

import numpy as np
import pytest

from octo_like.inference import ObservationHistory, stack_windows


def frame(t: int) -> dict:
    return {
        "image_primary": np.full((4, 4, 3), t, np.uint8),
        "proprio": np.full(3, float(t), np.float32),
    }


def test_first_push_repeats_the_first_frame_and_masks_the_padding():
    history = ObservationHistory(window=3)
    obs = history.push(frame(7))
    assert obs["image_primary"].shape == (3, 4, 4, 3) and obs["image_primary"].dtype == np.uint8
    assert obs["proprio"].shape == (3, 3)
    assert obs["image_primary"][:, 0, 0, 0].tolist() == [7, 7, 7]
    assert obs["timestep_pad_mask"].tolist() == [False, False, True]
    assert obs["pad_mask_dict"]["image_primary"].tolist() == [False, False, True]
    assert obs["pad_mask_dict"]["proprio"].tolist() == [False, False, True]


def test_window_slides_oldest_first_and_reset_starts_over():
    history = ObservationHistory(window=3)
    for t in range(5):
        obs = history.push(frame(t))
    assert obs["proprio"][:, 0].tolist() == [2.0, 3.0, 4.0]
    assert obs["timestep_pad_mask"].all()
    history.reset()
    obs = history.push(frame(9))
    assert obs["proprio"][:, 0].tolist() == [9.0, 9.0, 9.0]
    assert obs["timestep_pad_mask"].tolist() == [False, False, True]
    assert history.num_pushed == 1


def test_frame_pad_mask_marks_a_missing_key_at_that_step():
    history = ObservationHistory(window=2)
    history.push(frame(0))
    obs = history.push({**frame(1), "pad_mask_dict": {"image_primary": False}})
    assert obs["pad_mask_dict"]["image_primary"].tolist() == [True, False]
    assert obs["pad_mask_dict"]["proprio"].tolist() == [True, True]
    assert obs["timestep_pad_mask"].tolist() == [True, True]


def test_inconsistent_frames_are_errors():
    history = ObservationHistory(window=2)
    history.push(frame(0))
    with pytest.raises(ValueError, match="keys changed"):
        history.push({"proprio": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"'proprio' has shape \(4,\)"):
        history.push({**frame(1), "proprio": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="made by the history"):
        ObservationHistory(2).push({**frame(0), "timestep_pad_mask": True})
    with pytest.raises(ValueError, match="window must be"):
        ObservationHistory(0)


def test_stack_windows_batches_envs_with_their_own_padding():
    a, b = ObservationHistory(2), ObservationHistory(2)
    a.push(frame(0))
    wa = a.push(frame(1))
    wb = b.push(frame(5))
    batch = stack_windows([wa, wb])
    assert batch["image_primary"].shape == (2, 2, 4, 4, 3)
    assert batch["timestep_pad_mask"].tolist() == [[True, True], [False, True]]
    assert batch["pad_mask_dict"]["proprio"].tolist() == [[True, True], [False, True]]
    assert batch["proprio"][:, :, 0].tolist() == [[0.0, 1.0], [5.0, 5.0]]
    with pytest.raises(ValueError, match="keys"):
        stack_windows([wa, {"proprio": wa["proprio"]}])

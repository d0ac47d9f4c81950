"""Trajectory transforms, checked index by index at episode starts, ends and goals.

Actions encode their index (action[t, d] = t + d/10), proprio likewise (100 + t + p/10), and
images are strings naming camera and frame, so any off-by-one shows up as a wrong value.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from octo_like.data import traj_transforms as tt


def make_traj(
    length: int,
    action_dim: int = 2,
    proprio_dim: int = 3,
    language: bytes = b"pick up the block",
    missing_wrist: tuple[int, ...] = (),
) -> dict:
    """A standardized (stage 2) trajectory with index-encoding values."""
    t = np.arange(length)
    action = t[:, None] + np.arange(action_dim)[None, :] / 10
    proprio = 100 + t[:, None] + np.arange(proprio_dim)[None, :] / 10
    wrist = [b"" if i in missing_wrist else b"wrist_%d" % i for i in t]
    return {
        "observation": {
            "image_primary": tf.constant([b"primary_%d" % i for i in t]),
            "image_wrist": tf.constant(wrist, tf.string),
            "proprio": tf.constant(proprio.reshape(length, proprio_dim), tf.float32),
            "timestep": tf.constant(t, tf.int32),
        },
        "task": {"language_instruction": tf.constant([language] * length)},
        "action": tf.constant(action.reshape(length, action_dim), tf.float32),
        "dataset_name": tf.constant([b"toyset"] * length),
        "episode_index": tf.constant([7] * length, tf.int64),
    }


def to_numpy(tree):
    return tf.nest.map_structure(lambda x: x.numpy(), tree)


def action_values(indices, action_dim: int = 2) -> np.ndarray:
    """float32[..., A] of make_traj actions at the given (already clamped) frame indices."""
    indices = np.asarray(indices)
    return (indices[..., None] + np.arange(action_dim) / 10).astype(np.float32)


def reference_window(length: int, window: int, horizon: int, end=None):
    """Obs indices, timestep mask, action indices and action mask by explicit loops."""
    end = [length - 1] * length if end is None else end
    obs_idx = np.zeros((length, window), int)
    ts_mask = np.zeros((length, window), bool)
    act_idx = np.zeros((length, window, horizon), int)
    act_mask = np.zeros((length, window, horizon), bool)
    for t in range(length):
        for i in range(window):
            j = t - window + 1 + i
            obs_idx[t, i] = max(j, 0)
            ts_mask[t, i] = j >= 0
            for k in range(horizon):
                act_idx[t, i, k] = min(max(j + k, 0), length - 1)
                act_mask[t, i, k] = j >= 0 and j + k <= end[t]
    return obs_idx, ts_mask, act_idx, act_mask


def prepared(length: int, **kwargs) -> dict:
    return tt.add_pad_mask_dict(make_traj(length, **kwargs))


# ---------------------------------------------------------------- pad masks and dim padding


def test_add_pad_mask_dict_marks_present_inputs():
    traj = tt.add_pad_mask_dict(make_traj(4, language=b"", missing_wrist=(1, 3)))
    out = to_numpy(traj)
    obs_masks, task_masks = out["observation"]["pad_mask_dict"], out["task"]["pad_mask_dict"]
    np.testing.assert_array_equal(obs_masks["image_primary"], [True] * 4)
    np.testing.assert_array_equal(obs_masks["image_wrist"], [True, False, True, False])
    np.testing.assert_array_equal(obs_masks["proprio"], [True] * 4)
    np.testing.assert_array_equal(task_masks["language_instruction"], [False] * 4)
    no_proprio = to_numpy(tt.add_pad_mask_dict(make_traj(3, proprio_dim=0)))
    np.testing.assert_array_equal(
        no_proprio["observation"]["pad_mask_dict"]["proprio"], [False] * 3
    )


def test_pad_action_and_proprio_pads_with_zeros_and_records_masks():
    traj = tt.pad_action_and_proprio(prepared(3, action_dim=2, proprio_dim=1), 4, 3)
    out = to_numpy(traj)
    np.testing.assert_allclose(out["action"][:, :2], action_values(np.arange(3)))
    np.testing.assert_array_equal(out["action"][:, 2:], 0)
    np.testing.assert_array_equal(out["action_dim_mask"], [True, True, False, False])
    np.testing.assert_allclose(out["observation"]["proprio"][:, 0], [100, 101, 102])
    np.testing.assert_array_equal(out["observation"]["proprio"][:, 1:], 0)
    np.testing.assert_array_equal(
        out["observation"]["proprio_pad_mask"], [[True, False, False]] * 3
    )
    # None keeps the dataset's own sizes, every dim real.
    same = to_numpy(tt.pad_action_and_proprio(prepared(3), None, None))
    assert same["action"].shape == (3, 2) and same["observation"]["proprio"].shape == (3, 3)
    assert same["action_dim_mask"].all() and same["observation"]["proprio_pad_mask"].all()


def test_pad_zero_proprio_stays_marked_missing():
    traj = tt.pad_action_and_proprio(make_traj(3, proprio_dim=0), None, 2)
    traj = tt.add_pad_mask_dict(traj)  # after padding: must still see there is no proprio
    out = to_numpy(traj)
    np.testing.assert_array_equal(out["observation"]["proprio"], np.zeros((3, 2)))
    assert not out["observation"]["proprio_pad_mask"].any()
    assert not out["observation"]["pad_mask_dict"]["proprio"].any()


def test_too_many_action_dims_names_the_dataset_eagerly_and_in_map():
    traj = make_traj(3, action_dim=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="toyset.*episode 7"):
        tt.pad_action_and_proprio(traj, 4, None)
    ds = tf.data.Dataset.from_tensors(traj).map(lambda x: tt.pad_action_and_proprio(x, 4, None))
    with pytest.raises(tf.errors.InvalidArgumentError, match="action has 5 dims.*toyset"):
        next(iter(ds))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_proprio_dim=2"):
        tt.pad_action_and_proprio(traj, None, 2)


# ---------------------------------------------------------------- windows and chunks


def test_window_and_chunk_by_hand_t5_w2_h3():
    out = to_numpy(tt.window_and_chunk(prepared(5), 2, 3, mask_past_goal=False))
    obs = out["observation"]
    np.testing.assert_array_equal(obs["timestep"], [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]])
    np.testing.assert_array_equal(obs["timestep_pad_mask"][0], [False, True])
    assert obs["timestep_pad_mask"][1:].all()
    assert obs["image_primary"][0].tolist() == [b"primary_0", b"primary_0"]
    assert obs["image_primary"][4].tolist() == [b"primary_3", b"primary_4"]
    np.testing.assert_array_equal(obs["pad_mask_dict"]["image_primary"][0], [False, True])
    np.testing.assert_allclose(obs["proprio"][2, :, 0], [101, 102])
    assert out["action"].shape == (5, 2, 3, 2) and out["action_pad_mask"].shape == (5, 2, 3, 2)

    # Frame 0: window step 0 is padding (frame -1): actions -1, 0, 1 clamped to 0, 0, 1; masked.
    np.testing.assert_allclose(out["action"][0, 0], action_values([0, 0, 1]))
    assert not out["action_pad_mask"][0, 0].any()
    np.testing.assert_allclose(out["action"][0, 1], action_values([0, 1, 2]))
    assert out["action_pad_mask"][0, 1].all()
    # A middle frame is fully valid.
    np.testing.assert_allclose(out["action"][2], action_values([[1, 2, 3], [2, 3, 4]]))
    assert out["action_pad_mask"][2].all()
    # Frame 4: chunks run past the episode end; clamped values repeat action[4].
    np.testing.assert_allclose(out["action"][4, 0], action_values([3, 4, 4]))
    np.testing.assert_array_equal(out["action_pad_mask"][4, 0, :, 0], [True, True, False])
    np.testing.assert_allclose(out["action"][4, 1], action_values([4, 4, 4]))
    np.testing.assert_array_equal(out["action_pad_mask"][4, 1, :, 0], [True, False, False])
    np.testing.assert_array_equal(out["action_pad_mask"][3, 1, :, 0], [True, True, False])
    # Untouched keys, temporary key dropped.
    assert out["task"]["language_instruction"].shape == (5,)
    assert out["dataset_name"].shape == (5,) and "action_dim_mask" not in out


@pytest.mark.parametrize(
    "length, window, horizon", [(5, 1, 1), (5, 1, 4), (5, 3, 1), (1, 2, 3), (4, 6, 2), (6, 3, 4)]
)
def test_window_and_chunk_matches_loop_reference(length, window, horizon):
    out = to_numpy(tt.window_and_chunk(prepared(length), window, horizon, mask_past_goal=False))
    obs_idx, ts_mask, act_idx, act_mask = reference_window(length, window, horizon)
    np.testing.assert_array_equal(out["observation"]["timestep"], obs_idx)
    np.testing.assert_array_equal(out["observation"]["timestep_pad_mask"], ts_mask)
    np.testing.assert_allclose(out["observation"]["proprio"][..., 0], 100 + obs_idx)
    np.testing.assert_allclose(out["action"], action_values(act_idx))
    np.testing.assert_array_equal(out["action_pad_mask"], np.repeat(act_mask[..., None], 2, -1))


def test_single_frame_trajectory():
    out = to_numpy(tt.window_and_chunk(prepared(1), 2, 3, mask_past_goal=False))
    np.testing.assert_array_equal(out["observation"]["timestep_pad_mask"], [[False, True]])
    np.testing.assert_array_equal(
        out["action_pad_mask"][..., 0], [[[False, False, False], [True, False, False]]]
    )
    np.testing.assert_allclose(out["action"][0], action_values([[0, 0, 0], [0, 0, 0]]))


def test_window_one_horizon_one_is_the_identity_with_masks():
    traj = prepared(4)
    out = to_numpy(tt.window_and_chunk(traj, 1, 1, mask_past_goal=False))
    np.testing.assert_allclose(out["action"][:, 0, 0], traj["action"].numpy())
    np.testing.assert_array_equal(
        out["observation"]["image_wrist"][:, 0], traj["observation"]["image_wrist"]
    )
    assert out["observation"]["timestep_pad_mask"].all() and out["action_pad_mask"].all()


def test_mask_past_goal_uses_each_frames_goal():
    traj = prepared(5)
    goals = [2, 2, 2, 4, 4]
    traj["task"] = {**traj["task"], "timestep": tf.constant(goals, tf.int32)}
    out = to_numpy(tt.window_and_chunk(traj, 2, 3, mask_past_goal=True))
    *_, act_idx, act_mask = reference_window(5, 2, 3, end=goals)
    np.testing.assert_array_equal(out["action_pad_mask"][..., 0], act_mask)
    assert out["action_pad_mask"][1, 0].all()  # frame 0's actions 0..2 end at the goal
    np.testing.assert_array_equal(out["action_pad_mask"][1, 1, :, 0], [True, True, False])
    np.testing.assert_array_equal(out["action_pad_mask"][2, 1, :, 0], [True, False, False])
    np.testing.assert_allclose(out["action"], action_values(act_idx))  # values not clamped to goal
    ignored = to_numpy(tt.window_and_chunk(traj, 2, 3, mask_past_goal=False))
    assert ignored["action_pad_mask"][2, 1].all()
    with pytest.raises(KeyError, match="task.'timestep'.*add_empty_goals"):
        tt.window_and_chunk(prepared(5), 2, 3, mask_past_goal=True)


def test_padded_action_dims_are_masked_and_proprio_zero_dims_window():
    traj = tt.pad_action_and_proprio(prepared(4, action_dim=2, proprio_dim=0), 3, None)
    out = to_numpy(tt.window_and_chunk(traj, 2, 2, mask_past_goal=False))
    assert out["action"].shape == (4, 2, 2, 3)
    assert not out["action_pad_mask"][..., 2].any()
    np.testing.assert_array_equal(out["action"][..., 2], 0)
    *_, act_mask = reference_window(4, 2, 2)
    np.testing.assert_array_equal(out["action_pad_mask"][..., 0], act_mask)
    assert out["observation"]["proprio"].shape == (4, 2, 0)
    assert out["observation"]["proprio_pad_mask"].shape == (4, 2, 0)
    assert not out["observation"]["pad_mask_dict"]["proprio"].any()
    assert "action_dim_mask" not in out


def test_window_and_chunk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        tt.window_and_chunk(prepared(3), 0, 2, mask_past_goal=False)
    once = tt.window_and_chunk(prepared(3), 2, 2, mask_past_goal=False)
    with pytest.raises(ValueError, match="windowed twice"):
        tt.window_and_chunk(once, 2, 2, mask_past_goal=False)


# ---------------------------------------------------------------- goals


def relabel_many(traj: dict, seeds: int) -> dict:
    """Relabels the same trajectory with seeds (i, 1), i < seeds, inside tf.data."""
    ds = tf.data.Dataset.range(seeds).map(
        lambda i: tt.relabel_uniform_future_goal(traj, tf.stack([i, 1]), ["primary", "wrist"])[
            "task"
        ]
    )
    return to_numpy(next(iter(ds.batch(seeds))))


def test_goal_relabeling_is_uniform_over_the_future():
    length = 6
    task = relabel_many(prepared(length, missing_wrist=(5,)), 1200)
    goal = task["timestep"]  # [seeds, T]
    frames = np.arange(length)
    assert (goal >= frames).all() and (goal <= length - 1).all()
    for t in range(length):
        counts = np.bincount(goal[:, t], minlength=length)[t:]
        expected = len(goal) / (length - t)
        assert (counts > 0).all()
        np.testing.assert_allclose(counts, expected, rtol=0.25)  # ~6 sigma at 200 per bin
    # The goal images and masks are the observation's at the goal index.
    primary = np.vectorize(lambda g: b"primary_%d" % g, otypes=[object])(goal)
    np.testing.assert_array_equal(task["image_primary"], primary)
    np.testing.assert_array_equal(task["pad_mask_dict"]["image_wrist"], goal != 5)
    np.testing.assert_array_equal(task["image_wrist"] == b"", goal == 5)
    assert task["pad_mask_dict"]["image_primary"].all()
    assert task["pad_mask_dict"]["language_instruction"].all()


def test_goal_relabeling_needs_pad_masks_and_cameras():
    with pytest.raises(KeyError, match="add_pad_mask_dict"):
        tt.relabel_uniform_future_goal(make_traj(3), tf.constant([0, 1]), ["primary"])
    with pytest.raises(KeyError, match="image_top"):
        tt.relabel_uniform_future_goal(prepared(3), tf.constant([0, 1]), ["top"])
    with pytest.raises(TypeError, match="sequence"):
        tt.relabel_uniform_future_goal(prepared(3), tf.constant([0, 1]), "primary")


def test_add_empty_goals():
    task = to_numpy(tt.add_empty_goals(prepared(4), ["primary"])["task"])
    assert task["image_primary"].tolist() == [b""] * 4
    assert not task["pad_mask_dict"]["image_primary"].any()
    np.testing.assert_array_equal(task["timestep"], [3, 3, 3, 3])
    assert task["pad_mask_dict"]["language_instruction"].all()


# ---------------------------------------------------------------- subsample


def test_subsample_keeps_a_sorted_subset_with_intact_windows():
    windowed = tt.window_and_chunk(prepared(10), 3, 2, mask_past_goal=False)
    full = to_numpy(windowed)
    kept_sets = set()
    for i in range(5):
        out = to_numpy(tt.subsample(windowed, 4, tf.constant([i, 3])))
        frame = out["observation"]["timestep"][:, -1]  # the frame each row belongs to
        assert len(frame) == 4 and (np.diff(frame) > 0).all()
        kept_sets.add(tuple(frame))
        for key in ("action", "action_pad_mask"):
            np.testing.assert_array_equal(out[key], full[key][frame])
        for key in ("image_primary", "timestep_pad_mask", "proprio"):
            np.testing.assert_array_equal(out["observation"][key], full["observation"][key][frame])
        np.testing.assert_array_equal(out["episode_index"], [7] * 4)
    assert len(kept_sets) > 1  # different seeds, different subsets
    short = to_numpy(tt.subsample(windowed, 10, tf.constant([0, 3])))
    tf.nest.map_structure(np.testing.assert_array_equal, short, full)
    assert tt.subsample(windowed, None, tf.constant([0, 3])) is windowed
    with pytest.raises(ValueError, match="max_length"):
        tt.subsample(windowed, 0, tf.constant([0, 3]))


# ---------------------------------------------------------------- task conditioning dropout


def goal_traj(length: int, language: bytes = b"pick up the block") -> dict:
    traj = prepared(length, language=language)
    return tt.relabel_uniform_future_goal(traj, tf.constant([5, 5]), ["primary", "wrist"])


def test_task_dropout_frequencies_and_zeroing():
    length = 4000
    traj = goal_traj(length)
    out = to_numpy(
        tt.drop_task_conditioning(traj, tf.constant([1, 2]), language_only=0.3, goal_only=0.2)
    )
    task, masks = out["task"], out["task"]["pad_mask_dict"]
    goal_dropped = ~masks["image_primary"]
    language_dropped = ~masks["language_instruction"]
    assert abs(goal_dropped.mean() - 0.3) < 0.03 and abs(language_dropped.mean() - 0.2) < 0.03
    assert not (goal_dropped & language_dropped).any()
    np.testing.assert_array_equal(goal_dropped, ~masks["image_wrist"])
    assert (task["image_primary"][goal_dropped] == b"").all()
    assert (task["image_wrist"][goal_dropped] == b"").all()
    assert (task["image_primary"][~goal_dropped] != b"").all()
    assert (task["language_instruction"][language_dropped] == b"").all()
    assert (task["language_instruction"][~language_dropped] == b"pick up the block").all()
    # A dropped goal no longer ends the chunks early; kept goals are untouched.
    original_goal = traj["task"]["timestep"].numpy()
    np.testing.assert_array_equal(task["timestep"][goal_dropped], length - 1)
    np.testing.assert_array_equal(task["timestep"][~goal_dropped], original_goal[~goal_dropped])


def test_task_dropout_never_drops_the_only_modality():
    seed = tf.constant([4, 4])
    no_language = tt.drop_task_conditioning(
        goal_traj(500, language=b""), seed, language_only=0.5, goal_only=0.5
    )
    assert to_numpy(no_language["task"]["pad_mask_dict"]["image_primary"]).all()
    no_goal = tt.add_empty_goals(prepared(500), ["primary", "wrist"])
    no_goal = to_numpy(tt.drop_task_conditioning(no_goal, seed, language_only=0.5, goal_only=0.5))
    assert no_goal["task"]["pad_mask_dict"]["language_instruction"].all()
    assert (no_goal["task"]["language_instruction"] == b"pick up the block").all()
    with pytest.raises(ValueError, match="<= 1"):
        tt.drop_task_conditioning(goal_traj(3), seed, language_only=0.6, goal_only=0.6)
    with pytest.raises(ValueError, match="goal_only"):
        tt.drop_task_conditioning(goal_traj(3), seed, language_only=0.1, goal_only=-0.1)


# ---------------------------------------------------------------- the whole chain


def chain(traj: dict, seed: tf.Tensor) -> dict:
    seeds = tf.random.experimental.stateless_split(seed, 3)
    traj = tt.add_pad_mask_dict(traj)
    traj = tt.pad_action_and_proprio(traj, 4, 5)
    traj = tt.relabel_uniform_future_goal(traj, seeds[0], ["primary", "wrist"])
    traj = tt.drop_task_conditioning(traj, seeds[1], language_only=0.3, goal_only=0.3)
    traj = tt.window_and_chunk(traj, 2, 3, mask_past_goal=True)
    return tt.subsample(traj, 5, seeds[2])


def test_chain_in_dataset_map_equals_eager_and_is_seeded():
    trajs = [make_traj(8, missing_wrist=(2,)), make_traj(3)]
    seed = tf.constant([11, 12], tf.int64)
    ds = tf.data.Dataset.from_tensors(trajs[0]).concatenate(tf.data.Dataset.from_tensors(trajs[1]))
    ds = ds.map(lambda x: chain(x, seed))  # concatenate leaves T unknown while tracing
    assert ds.element_spec["action"].shape.as_list() == [None, 2, 3, 4]
    assert ds.element_spec["observation"]["image_primary"].shape.as_list() == [None, 2]
    for traj, mapped in zip(trajs, ds, strict=True):
        eager = to_numpy(chain(traj, seed))
        mapped = to_numpy(mapped)
        tf.nest.assert_same_structure(eager, mapped)
        tf.nest.map_structure(np.testing.assert_array_equal, eager, mapped)
        tf.nest.map_structure(np.testing.assert_array_equal, eager, to_numpy(chain(traj, seed)))

    eager = to_numpy(chain(trajs[0], seed))
    other = to_numpy(chain(trajs[0], tf.constant([13, 12], tf.int64)))
    assert not np.array_equal(other["task"]["timestep"], eager["task"]["timestep"]) or not (
        np.array_equal(other["observation"]["timestep"], eager["observation"]["timestep"])
    )
    # The goal masks chunks: nothing valid past each frame's goal, everything valid up to it.
    frame = eager["observation"]["timestep"][:, -1]
    act_idx = frame[:, None, None] - 1 + np.arange(2)[None, :, None] + np.arange(3)[None, None, :]
    window_frame = frame[:, None, None] - 1 + np.arange(2)[None, :, None]
    within = (act_idx <= eager["task"]["timestep"][:, None, None]) & (window_frame >= 0)
    np.testing.assert_array_equal(
        eager["action_pad_mask"][..., :2], np.repeat(within[..., None], 2, -1)
    )
    assert not eager["action_pad_mask"][..., 2:].any()
    assert eager["action_pad_mask"].shape == (5, 2, 3, 4) and eager["action"].shape == (5, 2, 3, 4)

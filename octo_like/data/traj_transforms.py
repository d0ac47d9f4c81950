"""Trajectory transforms: pad masks, dim padding, goals, history windows, action chunks.

Input is a standardized trajectory (stage 2 of `octo_like/schema.py`); output is a windowed
trajectory (stage 3), both with a leading time axis ``T``. Every function is graph-mode
TensorFlow, so it runs inside `tf.data.Dataset.map`, never mutates its input, and leaves keys it
does not own alone.
Random ones take an explicit stateless ``seed: int32[2]``: the same seed gives the same result.

The pipeline applies them in this order (each says what it needs from the ones before)::

    add_pad_mask_dict -> pad_action_and_proprio
    -> relabel_uniform_future_goal | add_empty_goals -> drop_task_conditioning
    -> window_and_chunk -> subsample

Episode ends are the point of this module. Window steps before the episode start repeat frame 0
and are masked out (``timestep_pad_mask``); action chunks running past the episode end (or the
goal) repeat the last action and are masked out (``action_pad_mask``), so the loss never trains on
invented actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from octo_like.schema import (
    ACTION,
    ACTION_PAD_MASK,
    DATASET_NAME,
    EPISODE_INDEX,
    IMAGE_PREFIX,
    LANGUAGE,
    PAD_MASK_DICT,
    PROPRIO,
    PROPRIO_PAD_MASK,
    TIMESTEP,
    TIMESTEP_PAD_MASK,
    image_key,
)

Traj = dict[str, Any]

# Temporary key bool[A_max]: which action dims are real. Written by `pad_action_and_proprio`,
# consumed (and removed) by `window_and_chunk`.
ACTION_DIM_MASK = "action_dim_mask"


def _length(traj: Traj) -> tf.Tensor:
    """int32 scalar T, read from the action (every trajectory has one)."""
    return tf.shape(_get(traj, ACTION, ""))[0]


def _get(tree: dict, key: str, where: str, hint: str = "") -> Any:
    """``tree[key]`` with an error naming the missing key and what to run first."""
    if key not in tree:
        raise KeyError(f"trajectory has no {where}{key!r}{hint}; keys there: {sorted(tree)}")
    return tree[key]


def _origin(traj: Traj) -> tf.Tensor:
    """string scalar 'dataset <name>, episode <i>' for run-time error messages."""
    if DATASET_NAME not in traj or EPISODE_INDEX not in traj:
        return tf.constant("unknown dataset")
    name = tf.strings.reduce_join(traj[DATASET_NAME][:1])
    episode = tf.strings.reduce_join(tf.strings.as_string(traj[EPISODE_INDEX][:1]))
    return tf.strings.join(["dataset '", name, "', episode ", episode])


def _zero_where(drop: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """``value`` with frames where ``drop: bool[T]`` is True replaced by b"" or zeros."""
    empty = tf.constant("") if value.dtype == tf.string else tf.zeros([], value.dtype)
    drop = tf.reshape(
        drop, tf.concat([tf.shape(drop), tf.ones([value.shape.rank - 1], tf.int32)], 0)
    )
    return tf.where(drop, empty, value)


def add_pad_mask_dict(traj: Traj) -> Traj:
    """Adds ``pad_mask_dict``s saying which inputs are present, so the model can ignore the rest.

    observation.pad_mask_dict: ``image_<cam>`` bool[T] (encoded string non-empty), ``proprio``
    bool[T] (the dataset has proprio: P > 0, or any real dim once `pad_action_and_proprio` ran).
    task.pad_mask_dict: ``language_instruction`` bool[T] and any ``image_<cam>`` (non-empty).
    """
    obs = dict(_get(traj, "observation", ""))
    task = dict(_get(traj, "task", ""))
    length = _length(traj)

    obs_masks = dict(obs.get(PAD_MASK_DICT, {}))
    for key, value in obs.items():
        if key.startswith(IMAGE_PREFIX):
            obs_masks[key] = tf.strings.length(value) > 0
    if PROPRIO in obs:
        if PROPRIO_PAD_MASK in obs:  # proprio already padded: zeros-only rows are not real
            obs_masks[PROPRIO] = tf.reduce_any(obs[PROPRIO_PAD_MASK], axis=-1)
        else:
            obs_masks[PROPRIO] = tf.fill([length], tf.shape(obs[PROPRIO])[-1] > 0)
    obs[PAD_MASK_DICT] = obs_masks

    task_masks = dict(task.get(PAD_MASK_DICT, {}))
    for key, value in task.items():
        if key == LANGUAGE or key.startswith(IMAGE_PREFIX):
            task_masks[key] = tf.strings.length(value) > 0
    task[PAD_MASK_DICT] = task_masks
    return {**traj, "observation": obs, "task": task}


def _pad_last_dim(traj: Traj, value: tf.Tensor, target: int, name: str) -> tf.Tensor:
    """Zero-pads ``value: float32[T, D]`` to ``[T, target]``; D > target fails, naming the data."""
    dim = tf.shape(value)[-1]
    message = tf.strings.join(
        [
            f"{name} has ",
            tf.strings.as_string(dim),
            f" dims, more than max_{name}_dim={target} (",
            _origin(traj),
            f"); raise max_{name}_dim or drop this dataset",
        ]
    )
    check = tf.debugging.Assert(dim <= target, [message])
    with tf.control_dependencies([check]):
        padded = tf.pad(value, [[0, 0], [0, tf.maximum(target - dim, 0)]])
    static_dim = value.shape[-1]
    if static_dim is None or static_dim <= target:  # else the assert fails at run time
        padded.set_shape(value.shape[:-1].concatenate([target]))
    return padded


def pad_action_and_proprio(
    traj: Traj, max_action_dim: int | None, max_proprio_dim: int | None
) -> Traj:
    """Zero-pads action and proprio dims so datasets with different robots batch together.

    action float32[T, A] -> [T, A_max]; observation.proprio float32[T, P] -> [T, P_max]
    (``None`` keeps the dataset's own size). Records ``action_dim_mask`` bool[A_max] (consumed by
    `window_and_chunk`) and ``observation.proprio_pad_mask`` bool[T, P_max], True for real dims.
    A > A_max or P > P_max fails with an error naming the dataset and episode.
    """
    for name, value in (("max_action_dim", max_action_dim), ("max_proprio_dim", max_proprio_dim)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {value}")
    obs = dict(_get(traj, "observation", ""))
    action = _get(traj, ACTION, "")
    proprio = _get(obs, PROPRIO, "observation.")
    length = _length(traj)
    action_dim = tf.shape(action)[-1]
    proprio_dim = tf.shape(proprio)[-1]

    if max_action_dim is not None:
        action = _pad_last_dim(traj, action, max_action_dim, "action")
    if max_proprio_dim is not None:
        proprio = _pad_last_dim(traj, proprio, max_proprio_dim, "proprio")
    obs[PROPRIO] = proprio
    real_proprio = tf.range(tf.shape(proprio)[-1]) < proprio_dim  # bool[P_max]
    obs[PROPRIO_PAD_MASK] = tf.tile(real_proprio[None], [length, 1])
    dim_mask = tf.range(tf.shape(action)[-1]) < action_dim  # bool[A_max]
    return {**traj, "observation": obs, ACTION: action, ACTION_DIM_MASK: dim_mask}


def _check_cameras(cameras: Sequence[str]) -> None:
    if isinstance(cameras, str):
        raise TypeError(f"cameras must be a sequence of camera names, got the string {cameras!r}")


def relabel_uniform_future_goal(traj: Traj, seed: tf.Tensor, cameras: Sequence[str]) -> Traj:
    """Hindsight goals: frame t's goal is a frame drawn uniformly from [t, T-1].

    Sets task.image_<cam> string[T] (the observation image at the goal), task.timestep int32[T]
    (the goal index, used by ``window_and_chunk(mask_past_goal=True)``) and
    task.pad_mask_dict.image_<cam> bool[T] (the observation's pad mask at the goal). Needs
    `add_pad_mask_dict` first. ``seed``: int32[2].
    """
    _check_cameras(cameras)
    if not cameras:
        raise ValueError(
            "relabel_uniform_future_goal needs at least one camera; use add_empty_goals"
        )
    obs = _get(traj, "observation", "")
    obs_masks = _get(obs, PAD_MASK_DICT, "observation.", " (run add_pad_mask_dict first)")
    task = dict(_get(traj, "task", ""))
    task_masks = dict(task.get(PAD_MASK_DICT, {}))
    length = _length(traj)

    frames = tf.range(length)
    draw = tf.random.stateless_uniform([length], seed)  # [0, 1)
    offset = tf.cast(tf.floor(draw * tf.cast(length - frames, tf.float32)), tf.int32)
    goal = tf.minimum(frames + offset, length - 1)  # min guards float rounding up to T - t
    for camera in cameras:
        key = image_key(camera)
        task[key] = tf.gather(_get(obs, key, "observation."), goal)
        task_masks[key] = tf.gather(_get(obs_masks, key, "observation.pad_mask_dict."), goal)
    task[TIMESTEP] = goal
    task[PAD_MASK_DICT] = task_masks
    return {**traj, "task": task}


def add_empty_goals(traj: Traj, cameras: Sequence[str]) -> Traj:
    """No goal images (relabeling off): task.image_<cam> = b"" with pad mask False, and
    task.timestep int32[T] = T-1 so actions are masked only past the episode end."""
    _check_cameras(cameras)
    task = dict(_get(traj, "task", ""))
    task_masks = dict(task.get(PAD_MASK_DICT, {}))
    length = _length(traj)
    for camera in cameras:
        key = image_key(camera)
        task[key] = tf.fill([length], "")
        task_masks[key] = tf.zeros([length], tf.bool)
    task[TIMESTEP] = tf.fill([length], length - 1)
    task[PAD_MASK_DICT] = task_masks
    return {**traj, "task": task}


def drop_task_conditioning(
    traj: Traj, seed: tf.Tensor, *, language_only: float, goal_only: float
) -> Traj:
    """Per frame, drops one task modality so the policy learns to follow either alone.

    With probability ``language_only`` the goal images are dropped, with probability
    ``goal_only`` the language is; otherwise both stay. A modality is dropped only when the other
    is present, so no frame loses its only task. Dropping zeroes the value (b"" / zeros) and sets
    its task.pad_mask_dict entry False; a dropped goal also moves task.timestep to T-1, so run
    this before `window_and_chunk` (actions past an unseen goal must not be masked).
    """
    for name, value in (("language_only", language_only), ("goal_only", goal_only)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    if language_only + goal_only > 1.0:
        raise ValueError(
            f"language_only + goal_only must be <= 1, got {language_only} + {goal_only}"
        )
    task = dict(_get(traj, "task", ""))
    masks = dict(_get(task, PAD_MASK_DICT, "task.", " (run add_pad_mask_dict first)"))
    length = _length(traj)
    goal_keys = sorted(k for k in task if k.startswith(IMAGE_PREFIX))

    has_language = _get(masks, LANGUAGE, "task.pad_mask_dict.")
    if goal_keys:
        goal_masks = [_get(masks, k, "task.pad_mask_dict.") for k in goal_keys]
        has_goal = tf.reduce_any(tf.stack(goal_masks, axis=-1), axis=-1)
    else:
        has_goal = tf.zeros([length], tf.bool)
    draw = tf.random.stateless_uniform([length], seed)
    drop_goal = (draw < language_only) & has_language
    drop_language = (draw >= language_only) & (draw < language_only + goal_only) & has_goal

    for key in goal_keys:
        task[key] = _zero_where(drop_goal, task[key])
        masks[key] = masks[key] & ~drop_goal
    if goal_keys and TIMESTEP in task:
        task[TIMESTEP] = tf.where(drop_goal, length - 1, task[TIMESTEP])
    task[LANGUAGE] = _zero_where(drop_language, _get(task, LANGUAGE, "task."))
    masks[LANGUAGE] = has_language & ~drop_language
    task[PAD_MASK_DICT] = masks
    return {**traj, "task": task}


def window_and_chunk(traj: Traj, window: int, action_horizon: int, *, mask_past_goal: bool) -> Traj:
    """Gives each frame its observation history and the action chunks to predict from it.

    observation leaves [T, ...] -> [T, W, ...]: window step i of frame t shows frame t-W+1+i,
    clamped at 0; observation.timestep_pad_mask bool[T, W] is False where that index was < 0, and
    the windowed pad_mask_dict leaves are AND'ed with it.
    action float32[T, A] -> [T, W, H, A]: window step i (frame j = t-W+1+i) gets actions
    j..j+H-1, indices clamped to [0, T-1]. action_pad_mask bool[T, W, H, A] is True only where
    j >= 0, j+k <= end (end = T-1, or task.timestep of frame t when ``mask_past_goal``) and the dim
    is real (``action_dim_mask``, which is removed here; all dims are real without it).
    """
    if window < 1 or action_horizon < 1:
        raise ValueError(f"window and action_horizon must be >= 1, got {window}, {action_horizon}")
    obs = _get(traj, "observation", "")
    if TIMESTEP_PAD_MASK in obs:
        raise ValueError("observation already has a timestep_pad_mask: trajectory windowed twice")
    action = _get(traj, ACTION, "")
    length = _length(traj)

    obs_index = tf.range(length)[:, None] + tf.range(window)[None, :] - (window - 1)  # [T, W]
    timestep_pad_mask = obs_index >= 0
    windowed = tf.maximum(obs_index, 0)
    obs = tf.nest.map_structure(lambda x: tf.gather(x, windowed), obs)
    if PAD_MASK_DICT in obs:
        obs[PAD_MASK_DICT] = tf.nest.map_structure(
            lambda m: m & timestep_pad_mask, obs[PAD_MASK_DICT]
        )
    obs[TIMESTEP_PAD_MASK] = timestep_pad_mask

    action_index = obs_index[:, :, None] + tf.range(action_horizon)[None, None, :]  # [T, W, H]
    chunks = tf.gather(action, tf.clip_by_value(action_index, 0, length - 1))  # [T, W, H, A]
    if mask_past_goal:
        task = _get(traj, "task", "")
        hint = " (run relabel_uniform_future_goal or add_empty_goals first)"
        end = tf.cast(_get(task, TIMESTEP, "task.", hint), tf.int32)[:, None, None]
    else:
        end = length - 1
    in_episode = timestep_pad_mask[:, :, None] & (action_index <= end)  # [T, W, H]
    dim_mask = traj.get(ACTION_DIM_MASK)
    if dim_mask is None:
        dim_mask = tf.ones([tf.shape(action)[-1]], tf.bool)
    action_pad_mask = in_episode[..., None] & dim_mask  # [T, W, H, A]

    out = {k: v for k, v in traj.items() if k != ACTION_DIM_MASK}
    out.update({"observation": obs, ACTION: chunks, ACTION_PAD_MASK: action_pad_mask})
    return out


def subsample(traj: Traj, max_length: int | None, seed: tf.Tensor) -> Traj:
    """Caps frames per trajectory so long episodes don't dominate a mixture.

    Keeps a uniformly random, sorted subset of ``max_length`` frames of a longer trajectory
    (run after `window_and_chunk`, so kept frames keep their full history and chunks); shorter
    ones, or ``max_length=None``, are returned unchanged. ``seed``: int32[2].
    """
    if max_length is None:
        return traj
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    length = _length(traj)
    order = tf.argsort(tf.random.stateless_uniform([length], seed))
    keep = tf.sort(order[:max_length])  # all frames, in order, when T <= max_length
    return {
        key: value
        if key == ACTION_DIM_MASK  # per-dim, not per-frame
        else tf.nest.map_structure(lambda x: tf.gather(x, keep), value)
        for key, value in traj.items()
    }

"""Action families: tf functions that convert one raw trajectory to the common action convention.

Each family serves every dataset whose actions share one conversion (RT-1 style dict actions,
flat action vectors, Bridge's reached-state deltas, Language Table's planar moves), with the
dataset's key layout as keyword parameters; `standardize.STANDARDIZERS` binds those per dataset.
The gripper rules, rotation helpers and key-path access they share live here too.

Input and output are those of `standardize.py`: step features batched along a leading ``T``;
out comes ``traj["action"] float32[T, 7]`` (xyz delta, roll-pitch-yaw delta, gripper 1 = open).
Only tf ops, so they run inside ``tf.data.Dataset.map``; a missing key fails while the map is
traced, naming the key.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from octo_like.data.validation import DataError

Trajectory = dict
# A proprio recipe: (observation key, start, stop) slices of the last axis, concatenated.
ProprioRecipe = Sequence[tuple[str, int | None, int | None]]

# Keys of a trajectory that are not per-step (not batched along T).
_UNBATCHED_KEYS = ("episode_metadata", "tfds_id")


class StandardizationError(DataError):
    """A trajectory lacks what its standardization function needs."""


@tf.autograph.experimental.do_not_convert  # pure Python over dict structure, no tensor control flow
def get_path(tree: Mapping, path: str, name: str = "standardize"):
    """``tree`` at a slash path; keys that themselves hold slashes (``present/xyz``) resolve too."""
    parts = path.split("/")
    node, i = tree, 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            raise StandardizationError(f"{name}: {path!r} passes through a non-dict value")
        for j in range(len(parts), i, -1):
            key = "/".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            here = "/".join(parts[:i]) or "<trajectory>"
            raise StandardizationError(
                f"{name}: missing key {path!r} (no {parts[i]!r} under {here}; "
                f"keys there: {sorted(node)})"
            )
    return node


def get_float(tree: Mapping, path: str, name: str) -> tf.Tensor:
    """float32 tensor at `path` of `tree`; a dict or strings there fail, naming the path."""
    value = get_path(tree, path, name)
    if isinstance(value, Mapping):
        raise StandardizationError(f"{name}: {path!r} is a dict, expected a tensor")
    if value.dtype == tf.string:
        raise StandardizationError(f"{name}: {path!r} holds strings, expected numbers")
    return tf.cast(value, tf.float32)


def _require_width(x: tf.Tensor, width: int, path: str, name: str) -> tf.Tensor:
    """Fails at trace time, not mid-training, when a layout reads past a tensor's last dim."""
    if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] < width):
        raise StandardizationError(
            f"{name}: {path!r} has shape {x.shape}, this layout needs [T, >= {width}]"
        )
    return x


def _column(x: tf.Tensor, index: int) -> tf.Tensor:
    """float32[T] from ``x[:, index]`` (or ``x`` itself when it is already one value a step)."""
    return x if x.shape.rank == 1 else x[:, index]


def _copy(traj: Trajectory) -> Trajectory:
    """Shallow copies of the trajectory and its observation, so the input is never mutated."""
    out = dict(traj)
    if isinstance(traj.get("observation"), Mapping):
        out["observation"] = dict(traj["observation"])
    return out


# --- gripper conventions: every rule returns float32[T] with 1 = open, 0 = closed ---------------


def gripper_open_positive(values: tf.Tensor) -> tf.Tensor:
    """Raw +1 (or 1 / True) = open and -1 / 0 = closed."""
    return tf.clip_by_value(tf.cast(values, tf.float32), 0.0, 1.0)


def gripper_close_positive(values: tf.Tensor) -> tf.Tensor:
    """Raw +1 (or 1 / True) = closed and -1 / 0 = open: clip, then flip."""
    return 1.0 - tf.clip_by_value(tf.cast(values, tf.float32), 0.0, 1.0)


def gripper_relative_to_absolute(values: tf.Tensor, threshold: float = 0.1) -> tf.Tensor:
    """RT-1 style commands (+1 close, -1 open, 0 keep) -> the resulting absolute state.

    Before the first command the gripper is taken to be in the state that command leaves
    (a first "close" means it was open); with no command at all it stays open.
    """
    values = tf.cast(values, tf.float32)
    command = tf.where(values < -threshold, 1.0, tf.where(values > threshold, -1.0, 0.0))
    issued = tf.boolean_mask(command, command != 0.0)
    initial = tf.cond(tf.size(issued) > 0, lambda: -issued[0], lambda: tf.constant(1.0))
    state = tf.scan(lambda prev, c: tf.where(c != 0.0, c, prev), command, initializer=initial)
    return (state + 1.0) / 2.0


def gripper_binarize(values: tf.Tensor, open_above: float = 0.95, closed_below: float = 0.05):
    """Continuous opening (1 = open) -> {0, 1}; in-between values take the next decided state.

    Transitions pass through a few intermediate values; they belong to the state reached after
    them. Trailing undecided values are thresholded at 0.5.
    """
    values = tf.cast(values, tf.float32)
    last = tf.cond(tf.size(values) > 0, lambda: values[-1], lambda: tf.constant(1.0))
    initial = tf.where(last >= 0.5, 1.0, 0.0)

    def step(next_state, value):
        return tf.where(value >= open_above, 1.0, tf.where(value <= closed_below, 0.0, next_state))

    return tf.scan(step, values, initializer=initial, reverse=True)


GRIPPER_RULES: Mapping[str, Callable[[tf.Tensor], tf.Tensor]] = types.MappingProxyType(
    {
        "open_positive": gripper_open_positive,
        "close_positive": gripper_close_positive,
        "relative": gripper_relative_to_absolute,
        "binarize": gripper_binarize,
    }
)


def quaternion_to_euler(quaternion: tf.Tensor) -> tf.Tensor:
    """float32[..., 4] quaternion (x, y, z, w) -> float32[..., 3] roll, pitch, yaw (extrinsic
    x-y-z, the usual robotics convention)."""
    q = tf.math.divide_no_nan(quaternion, tf.norm(quaternion, axis=-1, keepdims=True))
    x, y, z, w = tf.unstack(q, axis=-1)
    roll = tf.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = tf.asin(tf.clip_by_value(2.0 * (w * y - z * x), -1.0, 1.0))
    yaw = tf.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return tf.stack([roll, pitch, yaw], axis=-1)


def wrap_angle(angle: tf.Tensor) -> tf.Tensor:
    """Angles to [-pi, pi), so a difference across the +-pi seam stays small."""
    return tf.math.floormod(angle + math.pi, 2.0 * math.pi) - math.pi


# --- families -----------------------------------------------------------------------------------


def _set_proprio(traj: Trajectory, recipe: ProprioRecipe | None, name: str) -> None:
    """``observation/proprio float32[T, P]`` from slices of observation keys."""
    if recipe is None:
        return
    parts = []
    for key, start, stop in recipe:
        value = get_float(traj, f"observation/{key}", name)
        parts.append((value[:, None] if value.shape.rank == 1 else value)[:, start:stop])
    traj["observation"]["proprio"] = tf.concat(parts, axis=-1)


def _decode_zlib(traj: Trajectory, keys: Sequence[tuple[str, int]], name: str) -> None:
    """Observation tensors stored as ZLIB-compressed float32 bytes (kuka) -> float32[T, dim]."""
    for key, dim in keys:
        value = get_path(traj, f"observation/{key}", name)
        if value.dtype == tf.string:
            raw = tf.io.decode_raw(tf.io.decode_compressed(value, "ZLIB"), tf.float32)
            traj["observation"][key] = tf.reshape(raw, [-1, dim])


def _gripper(traj, source: str, index: int, rule: str, name: str) -> tf.Tensor:
    values = get_float(traj, source, name)
    if values.shape.rank != 1:
        _require_width(values, index + 1, source, name)
    return GRIPPER_RULES[rule](_column(values, index))


def dict_action_family(
    traj: Trajectory,
    *,
    name: str,
    xyz_key: str = "world_vector",
    rotation_key: str | None = "rotation_delta",
    gripper_key: str | None = "gripper_closedness_action",
    gripper_rule: str = "relative",
    gripper_constant: float = 1.0,
    proprio: ProprioRecipe | None = None,
    zlib_keys: Sequence[tuple[str, int]] = (),
) -> Trajectory:
    """RT-1 style dict actions: ``action/{world_vector, rotation_delta, <gripper>}`` -> [T, 7].

    Only the first 3 values of the position / rotation entries are used (BC-Z stores 10 future
    steps there). Without `rotation_key` the rotation is 0; without `gripper_key` the gripper is
    `gripper_constant`.
    """
    traj = _copy(traj)
    if not isinstance(get_path(traj, "action", name), Mapping):
        raise StandardizationError(f"{name}: expects a dict 'action', got a tensor")
    xyz = _require_width(get_float(traj, f"action/{xyz_key}", name), 3, xyz_key, name)[:, :3]
    if rotation_key is None:
        rotation = tf.zeros_like(xyz)
    else:
        rotation = get_float(traj, f"action/{rotation_key}", name)
        rotation = _require_width(rotation, 3, rotation_key, name)[:, :3]
    if gripper_key is None:
        gripper = tf.fill(tf.shape(xyz)[:1], gripper_constant)
    else:
        gripper = _gripper(traj, f"action/{gripper_key}", 0, gripper_rule, name)
    _decode_zlib(traj, zlib_keys, name)
    _set_proprio(traj, proprio, name)
    traj["action"] = tf.concat([xyz, rotation, gripper[:, None]], axis=-1)
    return traj


def flat_action_family(
    traj: Trajectory,
    *,
    name: str,
    action_key: str = "action",
    position: int = 0,
    rotation: int | None = 3,
    rotation_kind: str = "euler",
    gripper_source: str | None = None,
    gripper_index: int = 6,
    gripper_rule: str = "open_positive",
    proprio: ProprioRecipe | None = None,
) -> Trajectory:
    """A flat action vector: xyz at `position`, rotation at `rotation` (3 euler angles or a
    4-value x-y-z-w quaternion), the gripper at `gripper_index` of `gripper_source` (default:
    the action itself) converted by `gripper_rule`. Extra dims (joints, terminate) are dropped.
    """
    traj = _copy(traj)
    widths = [position + 3, 0 if rotation is None else rotation + 3]
    if rotation is not None and rotation_kind == "quaternion":
        widths[1] += 1
    raw = _require_width(get_float(traj, action_key, name), max(widths), action_key, name)
    xyz = raw[:, position : position + 3]
    if rotation is None:
        rpy = tf.zeros_like(xyz)
    elif rotation_kind == "quaternion":
        rpy = quaternion_to_euler(raw[:, rotation : rotation + 4])
    else:
        rpy = raw[:, rotation : rotation + 3]
    gripper = _gripper(traj, gripper_source or action_key, gripper_index, gripper_rule, name)
    _set_proprio(traj, proprio, name)
    traj["action"] = tf.concat([xyz, rpy, gripper[:, None]], axis=-1)
    return traj


def _drop_last_step(traj: Trajectory) -> Trajectory:
    """Every per-step leaf without its last step (episode metadata and scalars untouched)."""

    def drop(value):
        return value[:-1] if isinstance(value, tf.Tensor) and value.shape.rank else value

    return {
        key: value if key in _UNBATCHED_KEYS else tf.nest.map_structure(drop, value)
        for key, value in traj.items()
    }


def bridge_family(traj: Trajectory, *, name: str) -> Trajectory:
    """Bridge: the arm moves = reached-state deltas (``state[t+1] - state[t]``, angles wrapped),
    the continuous gripper is binarized. The last step has no next state, so it is dropped.
    """
    state = _require_width(get_float(traj, "observation/state", name), 6, "observation/state", name)
    action = _require_width(get_float(traj, "action", name), 7, "action", name)
    gripper = gripper_binarize(action[:, 6])
    movement = state[1:, :6] - state[:-1, :6]
    movement = tf.concat([movement[:, :3], wrap_angle(movement[:, 3:6])], axis=-1)
    traj = _drop_last_step(_copy(traj))
    traj["action"] = tf.concat([movement, gripper[:-1, None]], axis=-1)
    return traj


# Byte value -> one-byte string; 0 (padding) -> "".
_BYTE_STRINGS = [b""] + [bytes([i]) for i in range(1, 256)]


def decode_byte_strings(codes: tf.Tensor) -> tf.Tensor:
    """int[T, L] zero-padded UTF-8 bytes -> string[T] (exact bytes, no code-point guessing)."""
    table = tf.constant(_BYTE_STRINGS)
    codes = tf.clip_by_value(tf.cast(codes, tf.int32), 0, 255)
    return tf.strings.reduce_join(tf.gather(table, codes), axis=-1)


def language_table_family(traj: Trajectory, *, name: str) -> Trajectory:
    """Language Table: a 2D planar move; z, rotation 0 and the (absent) gripper open. The
    instruction is stored as bytes and becomes ``language_instruction string[T]``."""
    traj = _copy(traj)
    xy = get_float(traj, "action", name)[:, :2]
    codes = get_path(traj, "observation/instruction", name)
    zeros = tf.zeros_like(xy[:, :1])
    traj["action"] = tf.concat([xy, zeros, zeros, zeros, zeros, tf.ones_like(zeros)], axis=-1)
    traj["language_instruction"] = decode_byte_strings(codes)
    return traj


def identity(traj: Trajectory) -> Trajectory:
    """For datasets already in the target convention (e.g. written by `data/` converters)."""
    return _copy(traj)

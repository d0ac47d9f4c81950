"""Standardization: one raw RLDS trajectory -> the common action convention (before restructure).

Input: one trajectory as a dict of tf tensors, step features batched along a leading time axis
``T`` with the RLDS nesting (``traj["observation"]["state"] float32[T, S]``; ``traj["action"]``
a ``float32[T, A]`` tensor or a dict of them), plus unbatched ``episode_metadata`` / ``tfds_id``
when present. Images stay encoded strings and are passed through untouched.

Output: the same dict with ``traj["action"] float32[T, 7]`` in the EEF_POS convention (xyz delta,
roll-pitch-yaw delta, gripper with 1 = open and 0 = closed) and any derived entries the dataset's
spec names (``traj["observation"]["proprio"] float32[T, P]``, ``traj["language_instruction"]``).
Only ``bridge`` changes ``T``: relabelling actions from reached states drops the last step.

Datasets with the same conversion share one *family* function (`action_families.py`);
`STANDARDIZERS`, the table here, binds a family to each dataset's key layout, and
`check_standardized` checks what comes out against the dataset's spec. All functions use tf ops
only, so they run inside ``tf.data.Dataset.map``; a missing key fails while the map is traced,
naming the key.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping

import tensorflow as tf

from octo_like.data.oxe.action_families import (
    ProprioRecipe,
    StandardizationError,
    Trajectory,
    bridge_family,
    dict_action_family,
    flat_action_family,
    get_float,
    get_path,
    identity,
    language_table_family,
)
from octo_like.data.oxe.spec import DatasetSpec, unknown_name_error

# --- the registry: a name per distinct key layout --------------------------------------------


def _bind(name: str, family: Callable[..., Trajectory], **params) -> Callable:
    """`family` with a dataset's key layout bound. Not autograph-converted (no tensor-dependent
    Python control flow), so errors reach the caller of ``dataset.map`` with their own type."""
    bound = functools.update_wrapper(functools.partial(family, name=name, **params), family)
    converted = tf.autograph.experimental.do_not_convert(bound)
    # What it binds, readable (e.g. to pick datasets that cover every conversion path).
    converted.family, converted.params = family, types.MappingProxyType(params)
    return converted


def _obs(*recipe: tuple[str, int | None, int | None]) -> ProprioRecipe:
    return tuple(recipe)


STANDARDIZERS: Mapping[str, Callable[[Trajectory], Trajectory]] = types.MappingProxyType(
    {
        "identity": tf.autograph.experimental.do_not_convert(identity),
        # Generic flat 7+ dim actions (xyz, rpy, gripper at 6) for users' own datasets.
        "gripper_clip": _bind("gripper_clip", flat_action_family),
        "gripper_flip": _bind("gripper_flip", flat_action_family, gripper_rule="close_positive"),
        "bridge": _bind("bridge", bridge_family),
        "language_table": _bind("language_table", language_table_family),
        # RT-1 style dict actions.
        "rt1": _bind(
            "rt1",
            dict_action_family,
            proprio=_obs(("base_pose_tool_reached", None, None), ("gripper_closed", None, None)),
        ),
        "rt1_no_proprio": _bind("rt1_no_proprio", dict_action_family),
        "kuka": _bind(
            "kuka",
            dict_action_family,
            zlib_keys=(("clip_function_input/base_pose_tool_reached", 7), ("gripper_closed", 1)),
            proprio=_obs(
                ("clip_function_input/base_pose_tool_reached", None, None),
                ("gripper_closed", None, None),
            ),
        ),
        "jaco_play": _bind("jaco_play", dict_action_family, rotation_key=None),
        "berkeley_autolab_ur5": _bind(
            "berkeley_autolab_ur5", dict_action_family, proprio=_obs(("robot_state", 6, 14))
        ),
        # The cable stays grasped: the gripper is always closed.
        "berkeley_cable_routing": _bind(
            "berkeley_cable_routing", dict_action_family, gripper_key=None, gripper_constant=0.0
        ),
        "roboturk": _bind("roboturk", dict_action_family, gripper_rule="close_positive"),
        "viola": _bind(
            "viola",
            dict_action_family,
            gripper_rule="close_positive",
            proprio=_obs(("joint_states", None, None), ("gripper_states", None, None)),
        ),
        "toto": _bind(
            "toto", dict_action_family, gripper_key="open_gripper", gripper_rule="open_positive"
        ),
        "bc_z": _bind(
            "bc_z",
            dict_action_family,
            xyz_key="future/xyz_residual",
            rotation_key="future/axis_angle_residual",
            gripper_key="future/target_close",
            gripper_rule="close_positive",
            proprio=_obs(
                ("present/xyz", None, None),
                ("present/axis_angle", None, None),
                ("present/sensed_close", None, None),
            ),
        ),
        # Flat actions.
        # CALVIN's convention (+1 = open), which Octo trains on; the TFDS feature description
        # states the opposite, so check a few episodes before changing this.
        "taco_play": _bind(
            "taco_play",
            flat_action_family,
            action_key="action/rel_actions_world",
            proprio=_obs(("robot_obs", 0, 7)),  # EE pos, EE euler, gripper width
        ),
        "stanford_hydra": _bind(
            "stanford_hydra",
            flat_action_family,
            gripper_rule="close_positive",
            proprio=_obs(("state", 0, 3), ("state", 7, 10), ("state", 24, 25)),
        ),
        # UT Austin Franka datasets (BUDS, Sailor, Sirius, MUTEX): -1 open / +1 close.
        "austin_franka": _bind(
            "austin_franka",
            flat_action_family,
            gripper_rule="close_positive",
            proprio=_obs(("state", 0, 8)),
        ),
        "nyu_franka_play": _bind(
            "nyu_franka_play",
            flat_action_family,
            position=7,
            rotation=10,
            gripper_index=13,
            proprio=_obs(("state", -6, None)),
        ),
        "furniture_bench": _bind(
            "furniture_bench",
            flat_action_family,
            rotation_kind="quaternion",
            gripper_index=7,
            gripper_rule="close_positive",
            proprio=_obs(("state", 0, 7), ("state", -1, None)),
        ),
        "ucsd_kitchen": _bind("ucsd_kitchen", flat_action_family, proprio=_obs(("state", 0, 7))),
        "iamlab_cmu_pickup_insert": _bind(
            "iamlab_cmu_pickup_insert",
            flat_action_family,
            rotation_kind="quaternion",
            gripper_index=7,
            proprio=_obs(("state", 0, 8)),
        ),
        # No gripper action is stored; the gripper state stands in for it, read as 1 = closed
        # as in Octo's published transform.
        "berkeley_fanuc": _bind(
            "berkeley_fanuc",
            flat_action_family,
            gripper_source="observation/state",
            gripper_rule="close_positive",
            proprio=_obs(("state", 0, 7)),
        ),
    }
)


def check_standardized(spec: DatasetSpec, traj: Trajectory) -> Trajectory:
    """Checks a standardized trajectory against its spec; ``action`` cast to float32.

    Raises StandardizationError naming the dataset and the key at trace time.
    """
    where = f"dataset {spec.name!r} (standardize={spec.standardize!r})"
    action = traj.get("action")
    if not isinstance(action, tf.Tensor) or action.dtype == tf.string:
        keys = sorted(action) if isinstance(action, Mapping) else action
        raise StandardizationError(
            f"{where}: 'action' must be a numeric tensor [T, A] after standardization, got "
            f"{keys}; does the spec name the right standardize function?"
        )
    dim = spec.action_encoding.action_dim
    if action.shape.rank != 2 or (dim is not None and action.shape[-1] not in (None, dim)):
        raise StandardizationError(
            f"{where}: action has shape {action.shape}, expected [T, {dim}] for "
            f"{spec.action_encoding.value}"
        )
    out = dict(traj, action=tf.cast(action, tf.float32))
    observation = traj.get("observation", {})
    for camera, key in spec.image_keys.items():
        if key is None:
            continue
        try:  # a nested path ("cameras/front/rgb") resolves like language keys do
            image = get_path(observation, key, where)
        except StandardizationError:
            raise StandardizationError(
                f"{where}: camera {camera!r} reads observation key {key!r}, which is missing "
                f"(observation keys: {sorted(observation)})"
            ) from None
        if isinstance(image, Mapping) or image.dtype != tf.string:
            raise StandardizationError(
                f"{where}: camera {camera!r} reads {key!r}, which is not encoded images"
            )
    if spec.proprio_key is not None:
        get_float(observation, spec.proprio_key, where)
    if spec.language_key is not None:
        language = get_path(traj, spec.language_key, where)
        if isinstance(language, Mapping) or language.dtype != tf.string:
            raise StandardizationError(f"{where}: {spec.language_key!r} is not a string tensor")
    return out


def standardize_trajectory(spec: DatasetSpec, traj: Trajectory) -> Trajectory:
    """`spec`'s standardization function applied to `traj`, then `check_standardized`."""
    if spec.standardize not in STANDARDIZERS:
        error = unknown_name_error("standardize function", spec.standardize, STANDARDIZERS)
        raise StandardizationError(f"dataset {spec.name!r}: {error}")
    try:
        out = STANDARDIZERS[spec.standardize](traj)
    except StandardizationError as error:
        raise StandardizationError(f"dataset {spec.name!r}: {error}") from None
    return check_standardized(spec, out)


def standardizer_for(spec: DatasetSpec) -> Callable[[Trajectory], Trajectory]:
    """`standardize_trajectory` bound to `spec`, for ``dataset.map(standardizer_for(spec))``.

    Errors name the dataset and keep their type (a lambda would be autograph-converted, and
    tf.data would re-raise them as StagingError).
    """
    return tf.autograph.experimental.do_not_convert(functools.partial(standardize_trajectory, spec))

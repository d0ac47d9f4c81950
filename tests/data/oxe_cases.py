"""Every magic-soup dataset's published feature layout (names, nesting, dtypes, shapes) as a
`Case`, shared by the standardization tests (images shrunk to 8x8) and the dress rehearsal
(images at their real resolution, `real_schema`)."""

from __future__ import annotations

import dataclasses

from octo_like.data import synthetic

T = 4
SEP = "::"  # joins nested step keys (dict actions) for the flat synthetic schema
EXT = "_converted_externally_to_rlds"
IMG = synthetic.image(8, 8)
F = synthetic.tensor
NL = {"natural_language_instruction": synthetic.text(), "natural_language_embedding": F((512,))}
STEP_LANG = {"language_instruction": synthetic.text(), "language_embedding": F((512,))}
FILE_PATH = {"file_path": synthetic.text()}
RT1_ACTION = {
    "world_vector": F((3,)),
    "rotation_delta": F((3,)),
    "gripper_closedness_action": F((1,)),
    "terminate_episode": F((3,), "int32"),
    "base_displacement_vector": F((2,)),
    "base_displacement_vertical_rotation": F((1,)),
}
RTX_ACTION = {  # the RT-X conversions: scalar float terminate, (1,) gripper command
    "world_vector": F((3,)),
    "rotation_delta": F((3,)),
    "gripper_closedness_action": F((1,)),
    "terminate_episode": synthetic.scalar(),
}
# Raw gripper values over the T steps and the expected 1 = open / 0 = closed result.
OPEN_CLOSE_OPEN = (1.0, 0.0, 0.0, 1.0)
RELATIVE = (0.0, 1.0, 0.0, -1.0)  # keep, close, keep, open
PLUS_MINUS_CLOSE = (-1.0, 1.0, 1.0, -1.0)  # +1 = close
ZERO_ONE_CLOSE = (0.0, 1.0, 1.0, 0.0)  # 1 = close
PLUS_MINUS_OPEN = (1.0, -1.0, -1.0, 1.0)  # +1 = open


@dataclasses.dataclass(frozen=True)
class Case:
    """A dataset's published layout and how its gripper is crafted and expected to come out."""

    observation: dict
    step: dict
    proprio_dim: int | None
    gripper_path: tuple[str, ...] | None  # where the raw gripper lives in the steps
    gripper_column: int | None
    raw_gripper: tuple = OPEN_CLOSE_OPEN
    expected_gripper: tuple = OPEN_CLOSE_OPEN
    metadata: dict = dataclasses.field(default_factory=dict)


def _flat(case: Case) -> synthetic.RldsSchema:
    step = {}
    for key, feature in case.step.items():
        if isinstance(feature, dict):
            step.update({f"{key}{SEP}{k}": f for k, f in feature.items()})
        else:
            step[key] = feature
    return synthetic.RldsSchema(case.observation, step, case.metadata)


CASES = {
    "fractal20220817_data": Case(
        {"image": IMG, "base_pose_tool_reached": F((7,)), "gripper_closed": F((1,)), **NL},
        {"action": RT1_ACTION},
        8,
        ("action", "gripper_closedness_action"),
        0,
        RELATIVE,
    ),
    "kuka": Case(
        {
            "image": IMG,
            "clip_function_input/base_pose_tool_reached": F((7,)),
            "clip_function_input/workspace_bounds": F((3, 3)),
            "gripper_closed": F((1,)),
            "height_to_bottom": F((1,)),
            "task_id": F((1,)),
            **NL,
        },
        {"action": RT1_ACTION},
        8,
        ("action", "gripper_closedness_action"),
        0,
        RELATIVE,
    ),
    "bridge_dataset": Case(
        dict(synthetic.bridge_like_schema(8).observation),
        dict(synthetic.bridge_like_schema(8).step),
        7,
        ("action",),
        6,
        (1.0, 0.5, 0.0, 0.02),  # intermediate 0.5 belongs to the closing that follows
        (1.0, 0.0, 0.0),  # the last step is dropped by relabelling
        {"file_path": synthetic.text(), "episode_id": synthetic.scalar("int32")},
    ),
    "taco_play": Case(
        {
            "rgb_static": IMG,
            "rgb_gripper": IMG,
            "depth_static": F((150, 200)),
            "depth_gripper": F((84, 84)),
            "robot_obs": F((15,)),
            "structured_language_instruction": synthetic.text(),
            **NL,
        },
        {
            "action": {
                "actions": F((7,)),
                "rel_actions_world": F((7,)),
                "rel_actions_gripper": F((7,)),
                "terminate_episode": synthetic.scalar(),
            }
        },
        7,
        ("action", "rel_actions_world"),
        6,
        PLUS_MINUS_OPEN,
    ),
    "jaco_play": Case(
        {
            "image": IMG,
            "image_wrist": IMG,
            "end_effector_cartesian_pos": F((7,)),
            "end_effector_cartesian_velocity": F((6,)),
            "joint_pos": F((8,)),
            **NL,
        },
        {
            "action": {
                "world_vector": F((3,)),
                "gripper_closedness_action": F((1,)),
                "terminate_episode": F((3,), "int32"),
            }
        },
        7,
        ("action", "gripper_closedness_action"),
        0,
        RELATIVE,
    ),
    "berkeley_cable_routing": Case(
        {
            "image": IMG,
            "top_image": IMG,
            "wrist45_image": IMG,
            "wrist225_image": IMG,
            "robot_state": F((7,)),
            **NL,
        },
        {
            "action": {
                "world_vector": F((3,)),
                "rotation_delta": F((3,)),
                "terminate_episode": synthetic.scalar(),
            }
        },
        7,
        None,
        None,
        expected_gripper=(0.0,) * T,  # the cable stays grasped
    ),
    "roboturk": Case(
        {"front_rgb": IMG, **NL},
        {"action": RTX_ACTION},
        None,
        ("action", "gripper_closedness_action"),
        0,
        PLUS_MINUS_CLOSE,
    ),
    "nyu_door_opening_surprising_effectiveness": Case(
        {"image": IMG, **NL},
        {"action": RTX_ACTION},
        None,
        ("action", "gripper_closedness_action"),
        0,
        RELATIVE,
    ),
    "viola": Case(
        {
            "agentview_rgb": IMG,
            "eye_in_hand_rgb": IMG,
            "joint_states": F((7,)),
            "gripper_states": F((1,)),
            "ee_states": F((16,)),
            **NL,
        },
        {"action": dict(RTX_ACTION, gripper_closedness_action=synthetic.scalar())},
        8,
        ("action", "gripper_closedness_action"),
        None,
        PLUS_MINUS_CLOSE,
    ),
    "berkeley_autolab_ur5": Case(
        {
            "image": IMG,
            "hand_image": IMG,
            "image_with_depth": F((8, 8, 1)),  # a float32 Image in the original
            "robot_state": F((15,)),
            **NL,
        },
        {"action": dict(RTX_ACTION, gripper_closedness_action=synthetic.scalar())},
        8,
        ("action", "gripper_closedness_action"),
        None,
        RELATIVE,
    ),
    "toto": Case(
        {"image": IMG, "state": F((7,)), **NL},
        {
            "action": {
                "open_gripper": synthetic.scalar("bool"),
                "rotation_delta": F((3,)),
                "terminate_episode": synthetic.scalar(),
                "world_vector": F((3,)),
            }
        },
        7,
        ("action", "open_gripper"),
        None,
    ),
    "language_table": Case(
        {
            "rgb": IMG,
            "effector_translation": F((2,)),
            "effector_target_translation": F((2,)),
            "instruction": F((512,), "int32"),
        },
        {"action": F((2,))},
        2,
        None,
        None,
        expected_gripper=(1.0,) * T,  # no gripper: always open
    ),
    f"stanford_hydra_dataset{EXT}": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((27,))},
        {"action": F((7,)), "is_dense": synthetic.scalar("bool"), **STEP_LANG},
        7,
        ("action",),
        6,
        ZERO_ONE_CLOSE,
        metadata=FILE_PATH,
    ),
    f"austin_buds_dataset{EXT}": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((24,))},
        {"action": F((7,)), **STEP_LANG},
        8,
        ("action",),
        6,
        PLUS_MINUS_CLOSE,
        metadata=FILE_PATH,
    ),
    f"nyu_franka_play_dataset{EXT}": Case(
        {
            "image": IMG,
            "image_additional_view": IMG,
            "depth": F((128, 128, 1), "int32"),
            "depth_additional_view": F((128, 128, 1), "int32"),
            "state": F((13,)),
        },
        {"action": F((15,)), **STEP_LANG},
        6,
        ("action",),
        13,
        PLUS_MINUS_OPEN,
        metadata=FILE_PATH,
    ),
    f"furniture_bench_dataset{EXT}": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((35,))},
        {"action": F((8,)), **STEP_LANG},
        8,
        ("action",),
        7,
        PLUS_MINUS_CLOSE,
        metadata=FILE_PATH,
    ),
    f"ucsd_kitchen_dataset{EXT}": Case(
        {"image": IMG, "state": F((21,))},
        {"action": F((8,)), **STEP_LANG},
        7,
        ("action",),
        6,
        metadata=FILE_PATH,
    ),
    f"austin_sailor_dataset{EXT}": Case(
        {
            "image": IMG,
            "wrist_image": IMG,
            "state": F((8,)),
            "state_ee": F((16,)),
            "state_gripper": F((1,)),
            "state_joint": F((7,)),
        },
        {"action": F((7,)), **STEP_LANG},
        8,
        ("action",),
        6,
        PLUS_MINUS_CLOSE,
        metadata=FILE_PATH,
    ),
    f"austin_sirius_dataset{EXT}": Case(
        {
            "image": IMG,
            "wrist_image": IMG,
            "state": F((8,)),
            "state_ee": F((16,)),
            "state_gripper": F((1,)),
            "state_joint": F((7,)),
        },
        {"action": F((7,)), "action_mode": F((1,)), "intv_label": F((1,)), **STEP_LANG},
        8,
        ("action",),
        6,
        PLUS_MINUS_CLOSE,
        metadata=FILE_PATH,
    ),
    "bc_z": Case(
        {
            "image": IMG,
            "present/xyz": F((3,)),
            "present/axis_angle": F((3,)),
            "present/sensed_close": F((1,)),
            "present/autonomous": synthetic.scalar("int64"),
            "present/intervention": synthetic.scalar("int64"),
            "episode_success": synthetic.scalar(),
            "sequence_length": synthetic.scalar("int64"),
            **NL,
        },
        {
            "action": {
                "future/xyz_residual": F((30,)),
                "future/axis_angle_residual": F((30,)),
                "future/target_close": F((10,), "int64"),
            }
        },
        7,
        ("action", "future/target_close"),
        0,
        ZERO_ONE_CLOSE,
    ),
    f"dlr_edan_shared_control{EXT}": Case(
        {"image": IMG, "state": F((7,))},
        {"action": F((7,)), **STEP_LANG},
        7,
        ("action",),
        6,
        ZERO_ONE_CLOSE,
        metadata=FILE_PATH,
    ),
    f"iamlab_cmu_pickup_insert{EXT}": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((20,))},
        {"action": F((8,)), **STEP_LANG},
        8,
        ("action",),
        7,
        metadata=FILE_PATH,
    ),
    "utaustin_mutex": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((24,))},
        {"action": F((7,)), **STEP_LANG},
        8,
        ("action",),
        6,
        PLUS_MINUS_CLOSE,
        metadata=FILE_PATH,
    ),
    "berkeley_fanuc_manipulation": Case(
        {"image": IMG, "wrist_image": IMG, "state": F((13,)), "end_effector_state": F((7,))},
        {"action": F((6,)), **STEP_LANG},
        7,
        ("observation", "state"),  # no gripper action: the gripper state (1 = closed) is used
        6,
        ZERO_ONE_CLOSE,
        metadata=FILE_PATH,
    ),
    "cmu_stretch": Case(
        {"image": IMG, "state": F((4,))},
        {"action": F((8,)), **STEP_LANG},
        4,
        ("action",),
        6,
        metadata=FILE_PATH,
    ),
}


def real_schema(name: str) -> synthetic.RldsSchema:
    """`name`'s schema with every camera at its published resolution (REAL_IMAGE_SIZES) and
    nested step features (dict actions) kept nested, as the real TFDS builders write them."""
    case = CASES[name]
    observation = {}
    for key, feature in case.observation.items():
        if feature.kind == "image":
            feature = synthetic.image(*REAL_IMAGE_SIZES[name][key])
        elif key in REAL_TENSOR_SHAPES.get(name, {}):
            feature = synthetic.tensor(REAL_TENSOR_SHAPES[name][key], feature.dtype)
        observation[key] = feature
    return synthetic.RldsSchema(observation, dict(case.step), dict(case.metadata))


def write_mix_datasets(data_dir: str, mix) -> None:
    """Every dataset of `mix` ((name, weight) pairs) with its real schema, 2 short train
    episodes each: the dress rehearsal's data and the start-up benchmark's."""
    for index, (name, _) in enumerate(mix):
        synthetic.write_rlds_dataset(
            data_dir, name, real_schema(name),
            episodes={"train": 2}, episode_length=(6, 12), seed=index,
        )  # fmt: skip


# Published camera resolutions (height, width) of each dataset's image features, from the
# datasets' TFDS feature definitions (the Open X-Embodiment dataset overview).
REAL_IMAGE_SIZES = {
    "fractal20220817_data": {"image": (256, 320)},
    "kuka": {"image": (512, 640)},
    "bridge_dataset": {f"image_{i}": (256, 256) for i in range(4)},
    "taco_play": {"rgb_static": (150, 200), "rgb_gripper": (84, 84)},
    "jaco_play": {"image": (224, 224), "image_wrist": (224, 224)},
    "berkeley_cable_routing": {
        "image": (128, 128),
        "top_image": (128, 128),
        "wrist45_image": (128, 128),
        "wrist225_image": (128, 128),
    },
    "roboturk": {"front_rgb": (480, 640)},
    "nyu_door_opening_surprising_effectiveness": {"image": (720, 960)},
    "viola": {"agentview_rgb": (224, 224), "eye_in_hand_rgb": (224, 224)},
    "berkeley_autolab_ur5": {"image": (480, 640), "hand_image": (480, 640)},
    "toto": {"image": (480, 640)},
    "language_table": {"rgb": (360, 640)},
    f"stanford_hydra_dataset{EXT}": {"image": (240, 320), "wrist_image": (240, 320)},
    f"austin_buds_dataset{EXT}": {"image": (128, 128), "wrist_image": (128, 128)},
    f"nyu_franka_play_dataset{EXT}": {"image": (128, 128), "image_additional_view": (128, 128)},
    f"furniture_bench_dataset{EXT}": {"image": (224, 224), "wrist_image": (224, 224)},
    f"ucsd_kitchen_dataset{EXT}": {"image": (480, 640)},
    f"austin_sailor_dataset{EXT}": {"image": (128, 128), "wrist_image": (128, 128)},
    f"austin_sirius_dataset{EXT}": {"image": (84, 84), "wrist_image": (84, 84)},
    "bc_z": {"image": (171, 213)},
    f"dlr_edan_shared_control{EXT}": {"image": (360, 640)},
    f"iamlab_cmu_pickup_insert{EXT}": {"image": (360, 640), "wrist_image": (240, 320)},
    "utaustin_mutex": {"image": (128, 128), "wrist_image": (128, 128)},
    "berkeley_fanuc_manipulation": {"image": (224, 224), "wrist_image": (224, 224)},
    "cmu_stretch": {"image": (128, 128)},
}
# Non-image features shrunk in CASES whose real shape follows a camera.
REAL_TENSOR_SHAPES = {"berkeley_autolab_ur5": {"image_with_depth": (480, 640, 1)}}

"""Specs of the Open X-Embodiment datasets in Octo's pretraining mix ("magic soup").

Facts come from the public TFDS feature definitions of each dataset (key names, shapes, where the
language lives) and from Octo's published dataset configuration (which camera is primary, whose
instructions are uninformative and dropped). Users add or override datasets with `extra_specs`
(typically `DatasetSpec.from_dict` entries of a config) instead of editing this table.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

from octo_like.data.oxe.spec import (
    ActionEncoding,
    DatasetSpec,
    simulated_dataset_spec,
    unknown_name_error,
)
from octo_like.data.oxe.standardize import STANDARDIZERS

# The gripper is already in {0, 1}; normalizing it would only blur the binary target.
EEF_POS_MASK = (True,) * 6 + (False,)

_NL = "observation/natural_language_instruction"  # RT-X conversions keep language here
_STEP_LANGUAGE = "language_instruction"  # externally converted datasets keep it per step


def _spec(
    name: str,
    standardize: str,
    *,
    primary: str | None = None,
    secondary: str | None = None,
    wrist: str | None = None,
    proprio: str | None = None,
    language: str | None = None,
) -> DatasetSpec:
    """`language` None: the dataset has no instruction, or only an uninformative one."""
    return DatasetSpec(
        name=name,
        image_keys={"primary": primary, "secondary": secondary, "wrist": wrist},
        proprio_key=proprio,
        language_key=language,
        action_normalization_mask=EEF_POS_MASK,
        standardize=standardize,
    )


_EXT = "_converted_externally_to_rlds"

_SPECS = (
    _spec("fractal20220817_data", "rt1", primary="image", proprio="proprio", language=_NL),
    _spec("kuka", "kuka", primary="image", proprio="proprio"),
    _spec(
        "bridge_dataset",
        "bridge",
        primary="image_0",
        secondary="image_1",
        proprio="state",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        "taco_play",
        "taco_play",
        primary="rgb_static",
        wrist="rgb_gripper",
        proprio="proprio",
        language=_NL,
    ),
    _spec(
        "jaco_play",
        "jaco_play",
        primary="image",
        wrist="image_wrist",
        proprio="end_effector_cartesian_pos",
        language=_NL,
    ),
    _spec(
        "berkeley_cable_routing",
        "berkeley_cable_routing",
        primary="image",
        secondary="top_image",
        wrist="wrist45_image",
        proprio="robot_state",
    ),
    _spec("roboturk", "roboturk", primary="front_rgb"),
    _spec("nyu_door_opening_surprising_effectiveness", "rt1_no_proprio", wrist="image"),
    _spec("viola", "viola", primary="agentview_rgb", wrist="eye_in_hand_rgb", proprio="proprio"),
    _spec(
        "berkeley_autolab_ur5",
        "berkeley_autolab_ur5",
        primary="image",
        wrist="hand_image",
        proprio="proprio",
        language=_NL,
    ),
    _spec("toto", "toto", primary="image", proprio="state"),
    _spec(
        "language_table",
        "language_table",
        primary="rgb",
        proprio="effector_translation",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        f"stanford_hydra_dataset{_EXT}",
        "stanford_hydra",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
    ),
    _spec(
        f"austin_buds_dataset{_EXT}",
        "austin_franka",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
    ),
    _spec(
        f"nyu_franka_play_dataset{_EXT}",
        "nyu_franka_play",
        primary="image",
        secondary="image_additional_view",
        proprio="proprio",
    ),
    _spec(
        f"furniture_bench_dataset{_EXT}",
        "furniture_bench",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        f"ucsd_kitchen_dataset{_EXT}",
        "ucsd_kitchen",
        primary="image",
        proprio="proprio",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        f"austin_sailor_dataset{_EXT}",
        "austin_franka",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
    ),
    _spec(
        f"austin_sirius_dataset{_EXT}",
        "austin_franka",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
    ),
    _spec("bc_z", "bc_z", primary="image", proprio="proprio", language=_NL),
    _spec(
        f"dlr_edan_shared_control{_EXT}",
        "gripper_flip",
        primary="image",
        proprio="state",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        f"iamlab_cmu_pickup_insert{_EXT}",
        "iamlab_cmu_pickup_insert",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
        language=_STEP_LANGUAGE,
    ),
    _spec(
        "utaustin_mutex", "austin_franka", primary="image", wrist="wrist_image", proprio="proprio"
    ),
    _spec(
        "berkeley_fanuc_manipulation",
        "berkeley_fanuc",
        primary="image",
        wrist="wrist_image",
        proprio="proprio",
        language=_STEP_LANGUAGE,
    ),
    _spec("cmu_stretch", "gripper_clip", primary="image", proprio="state", language=_STEP_LANGUAGE),
)

OXE_DATASETS: Mapping[str, DatasetSpec] = types.MappingProxyType(
    {spec.name: spec for spec in _SPECS}
)


# Simulated datasets in the format scripts/collect_demos.py writes for each embodiment variant
# (octo_like/envs/variants.py derives the same specs from its variant table; a test keeps the two
# tables equal).
SIMULATED_DATASETS: Mapping[str, DatasetSpec] = types.MappingProxyType(
    {
        spec.name: spec
        for spec in (
            simulated_dataset_spec("metaworld_default", ("primary",), ActionEncoding.CUSTOM, 4),
            simulated_dataset_spec(
                "metaworld_wrist", ("primary", "wrist"), ActionEncoding.CUSTOM, 4
            ),
            simulated_dataset_spec("metaworld_metric7", ("primary",), ActionEncoding.EEF_POS, 7),
            simulated_dataset_spec(
                "metaworld_stereo", ("primary", "secondary"), ActionEncoding.CUSTOM, 4
            ),
            simulated_dataset_spec(
                "metaworld_default_wrist", ("primary", "wrist"), ActionEncoding.CUSTOM, 4
            ),
            simulated_dataset_spec("metaworld_front", ("primary",), ActionEncoding.CUSTOM, 4),
            simulated_dataset_spec(
                "metaworld_front_wrist", ("primary", "wrist"), ActionEncoding.CUSTOM, 4
            ),
        )
    }
)


def get_dataset_spec(
    name: str, extra_specs: Mapping[str, DatasetSpec] | None = None
) -> DatasetSpec:
    """The spec of `name`; `extra_specs` (keyed by dataset name) extend or override the registry.

    Raises UnknownNameError (a KeyError and a ValueError) listing close names for an unknown
    dataset or an unknown standardization function.
    """
    specs = {**OXE_DATASETS, **SIMULATED_DATASETS}
    for key, spec in (extra_specs or {}).items():
        if not isinstance(spec, DatasetSpec):
            raise TypeError(
                f"extra_specs[{key!r}] must be a DatasetSpec (use DatasetSpec.from_dict), "
                f"got {type(spec).__name__}"
            )
        if spec.name != key:
            raise ValueError(f"extra_specs key {key!r} differs from its spec's name {spec.name!r}")
        specs[key] = spec
    if name not in specs:
        raise unknown_name_error("dataset", name, specs)
    spec = specs[name]
    if spec.standardize not in STANDARDIZERS:
        error = unknown_name_error("standardize function", spec.standardize, STANDARDIZERS)
        raise type(error)(f"dataset {name!r}: {error}")
    return spec

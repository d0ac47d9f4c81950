"""Named dataset mixtures: (dataset name, sampling weight) pairs.

Weights are relative: the mixture module may further scale them (e.g. by dataset size, as Octo
does). ``rtx`` and ``oxe_magic_soup`` are Octo's published mixes and weights.
"""

from __future__ import annotations

import math
import numbers
import types
from collections.abc import Mapping, Sequence

from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.oxe.spec import DatasetSpec, unknown_name_error

Mix = tuple[tuple[str, float], ...]

_EXT = "_converted_externally_to_rlds"

# Octo's 25-dataset pretraining mix with its published weights.
OXE_MAGIC_SOUP: Mix = (
    ("fractal20220817_data", 0.54087122203),
    ("kuka", 0.8341046294),
    ("bridge_dataset", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("nyu_door_opening_surprising_effectiveness", 1.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
    ("language_table", 0.1),
    (f"stanford_hydra_dataset{_EXT}", 2.0),
    (f"austin_buds_dataset{_EXT}", 1.0),
    (f"nyu_franka_play_dataset{_EXT}", 3.0),
    (f"furniture_bench_dataset{_EXT}", 0.1),
    (f"ucsd_kitchen_dataset{_EXT}", 2.0),
    (f"austin_sailor_dataset{_EXT}", 1.0),
    (f"austin_sirius_dataset{_EXT}", 1.0),
    ("bc_z", 0.2),
    (f"dlr_edan_shared_control{_EXT}", 1.0),
    (f"iamlab_cmu_pickup_insert{_EXT}", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
)

# 12 of the magic soup's 25 (its weights) whose conversions take every code path the 25 take:
# each standardization family, gripper rule, rotation kind and offset layout, nested and ZLIB
# keys, every camera layout and language source (tests/data/test_rehearsal_mix.py checks it).
# A pod launch's dress rehearsal on half the data: `make test` runs the rehearsal on it,
# `make rehearsal` on all 25.
_PATHS_OF_THE_SOUP = (
    "kuka", "bridge_dataset", "taco_play", "jaco_play", "berkeley_cable_routing", "toto",
    "nyu_door_opening_surprising_effectiveness", "language_table",
    f"nyu_franka_play_dataset{_EXT}", f"furniture_bench_dataset{_EXT}", "bc_z",
    "berkeley_fanuc_manipulation",
)  # fmt: skip
OXE_MAGIC_SOUP_PATHS: Mix = tuple(pair for pair in OXE_MAGIC_SOUP if pair[0] in _PATHS_OF_THE_SOUP)

# The RT-X paper's mix as published with Octo (a subset of the magic soup, other weights).
RTX: Mix = (
    ("fractal20220817_data", 0.54087122203),
    ("kuka", 0.8341046294),
    ("bridge_dataset", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 2.0),
    ("berkeley_cable_routing", 3.0),
    ("roboturk", 1.0),
    ("nyu_door_opening_surprising_effectiveness", 5.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 1.0),
    ("toto", 1.0),
)

MIXES: Mapping[str, Mix] = types.MappingProxyType(
    {
        "bridge": (("bridge_dataset", 1.0),),
        # Small: the two datasets with simulated evaluations (SIMPLER), equally weighted.
        "bridge_fractal": (("bridge_dataset", 1.0), ("fractal20220817_data", 1.0)),
        "rtx": RTX,
        "oxe_magic_soup": OXE_MAGIC_SOUP,
        "oxe_magic_soup_paths": OXE_MAGIC_SOUP_PATHS,
        # Simulated (scripts/collect_demos.py): one embodiment, or two camera set-ups of it.
        "metaworld": (("metaworld_default", 1.0),),
        "metaworld_cross": (("metaworld_default", 1.0), ("metaworld_wrist", 1.0)),
        "metaworld_stereo": (("metaworld_stereo", 1.0),),
        "metaworld_default_wrist": (("metaworld_default_wrist", 1.0),),
        "metaworld_front": (("metaworld_front", 1.0),),
        "metaworld_front_wrist": (("metaworld_front_wrist", 1.0),),
        # Two viewpoints of the Sawyer (front and corner), equally weighted: `laptop_broad`.
        "metaworld_broad": (("metaworld_front", 1.0), ("metaworld_default", 1.0)),
    }
)


def resolve_mix(
    mix: str | Sequence[tuple[str, float]],
    extra_specs: Mapping[str, DatasetSpec] | None = None,
) -> list[tuple[DatasetSpec, float]]:
    """The specs and weights of a named mix or of explicit ``(dataset, weight)`` pairs.

    Raises UnknownNameError (KeyError and ValueError) listing close names for an unknown mix or
    dataset, and ValueError for a weight that is not a finite number > 0, a dataset listed twice
    or an empty mix.
    """
    if isinstance(mix, str):
        if mix not in MIXES:
            raise unknown_name_error("mix", mix, MIXES)
        label, pairs = f"mix {mix!r}", MIXES[mix]
    else:
        label, pairs = "mix", tuple(mix)
    if not pairs:
        raise ValueError(f"{label} is empty")
    resolved, seen = [], set()
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{label}: entries must be (dataset name, weight) pairs, got {pair!r}")
        name, weight = pair
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ValueError(f"{label}: weight of {name!r} must be a finite number > 0: {weight!r}")
        if name in seen:
            raise ValueError(f"{label}: dataset {name!r} is listed twice")
        seen.add(name)
        try:
            spec = get_dataset_spec(name, extra_specs)
        except KeyError as error:
            raise type(error)(f"{label}: {error}") from None
        resolved.append((spec, float(weight)))
    return resolved

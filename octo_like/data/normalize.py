"""Normalize a standardized trajectory's actions and proprio inside tf.data.

The arithmetic (and its numpy twin for inference) lives in `octo_like.normalization`. Normalize
raw standardized trajectories, before padding dimensions (`max_action_dim`), so the
statistics' D matches the data's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from octo_like import schema
from octo_like.normalization import (
    DatasetStatistics,
    NormalizationType,
    affine_map,
    as_normalization_type,
    normalize_affine_tf,
)


def normalize_trajectory(
    traj: dict,
    stats: DatasetStatistics,
    kind: NormalizationType | str,
    action_mask: Sequence[bool] | None = None,
    proprio_mask: Sequence[bool] | None = None,
) -> dict:
    """Normalizes ``action float32[T, A]`` and ``observation.proprio float32[T, P]`` (P > 0).

    Returns a new dict (the input is not modified); every other key passes through. For use in
    `tf.data.Dataset.map` on standardized trajectories.
    """

    maps = normalization_maps(stats, kind, action_mask, proprio_mask)
    return normalize_trajectory_with(traj, as_constants(maps), kind)


def normalization_maps(
    stats: DatasetStatistics,
    kind: NormalizationType | str,
    action_mask: Sequence[bool] | None = None,
    proprio_mask: Sequence[bool] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A dataset's normalization as arrays: ``{"action": (offset, scale, mask)}``, plus
    ``"proprio"`` when its statistics have proprio (NONE: masks of False, leaving values as
    they are). Passed into one traced transform as tensors, they let datasets share its trace
    instead of each tracing its own with its statistics as constants."""
    kind = as_normalization_type(kind)
    maps = {}
    for key, name, field, mask in (
        (schema.ACTION, repr(schema.ACTION), stats.action, action_mask),
        (schema.PROPRIO, f"observation/{schema.PROPRIO}", stats.proprio, proprio_mask),
    ):
        if field is None:
            continue
        try:
            affine = affine_map(field, kind, mask)
        except (ValueError, TypeError) as e:
            raise type(e)(f"normalizing {name}: {e}") from e
        maps[key] = affine if affine is not None else _identity_map(field.dim)
    return maps


def as_constants(maps: Mapping[str, tuple]) -> dict[str, tuple]:
    """`normalization_maps`' arrays as constants of the graph being traced."""
    import tensorflow as tf

    return {key: tuple(tf.constant(a) for a in arrays) for key, arrays in maps.items()}


def _identity_map(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NONE as an affine map: nothing selected by the mask."""
    return np.zeros(dim, np.float32), np.ones(dim, np.float32), np.zeros(dim, bool)


def normalize_trajectory_with(
    traj: dict, maps: Mapping[str, tuple], kind: NormalizationType | str
) -> dict:
    """`normalize_trajectory` with the maps of `normalization_maps` given as tensors."""
    import tensorflow as tf

    kind = as_normalization_type(kind)
    if schema.ACTION not in traj:
        raise KeyError(f"trajectory has no {schema.ACTION!r} key (found {sorted(traj)})")
    out = dict(traj)
    try:
        out[schema.ACTION] = normalize_affine_tf(traj[schema.ACTION], *maps[schema.ACTION], kind)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing {schema.ACTION!r}: {e}") from e
    observation = traj.get("observation", {})
    proprio_map = maps.get(schema.PROPRIO)
    if schema.PROPRIO not in observation:
        if proprio_map is not None:
            raise KeyError(
                f"statistics have proprio (P={proprio_map[0].shape[0]}) but the trajectory has "
                f"no observation/{schema.PROPRIO}"
            )
        return out
    proprio = tf.convert_to_tensor(observation[schema.PROPRIO])
    proprio_dim = proprio.shape[-1] if proprio.shape.rank else None
    if proprio_dim == 0:
        return out
    if proprio_map is None:
        raise ValueError(
            f"the trajectory has observation/{schema.PROPRIO} with {proprio_dim} dims but the "
            "statistics have none (computed on data without proprio?)"
        )
    try:
        normalized = normalize_affine_tf(proprio, *proprio_map, kind)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing observation/{schema.PROPRIO}: {e}") from e
    out["observation"] = {**observation, schema.PROPRIO: normalized}
    return out

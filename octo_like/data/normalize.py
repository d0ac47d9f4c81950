"""Normalize a standardized trajectory's actions and proprio inside tf.data.

The arithmetic (and its numpy twin for inference) lives in `octo_like.normalization`. Normalize
raw standardized trajectories, before padding dimensions (`max_action_dim`), so the
statistics' D matches the data's.
"""

from __future__ import annotations

from collections.abc import Sequence

from octo_like import schema
from octo_like.normalization import (
    DatasetStatistics,
    NormalizationType,
    as_normalization_type,
    normalize_tf,
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
    import tensorflow as tf

    kind = as_normalization_type(kind)
    if schema.ACTION not in traj:
        raise KeyError(f"trajectory has no {schema.ACTION!r} key (found {sorted(traj)})")
    out = dict(traj)
    try:
        out[schema.ACTION] = normalize_tf(traj[schema.ACTION], stats.action, kind, action_mask)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing {schema.ACTION!r}: {e}") from e
    observation = traj.get("observation", {})
    if schema.PROPRIO not in observation:
        if stats.proprio is not None:
            raise KeyError(
                f"statistics have proprio (P={stats.proprio.dim}) but the trajectory has no "
                f"observation/{schema.PROPRIO}"
            )
        return out
    proprio = tf.convert_to_tensor(observation[schema.PROPRIO])
    proprio_dim = proprio.shape[-1] if proprio.shape.rank else None
    if proprio_dim == 0:
        return out
    if stats.proprio is None:
        raise ValueError(
            f"the trajectory has observation/{schema.PROPRIO} with {proprio_dim} dims but the "
            "statistics have none (computed on data without proprio?)"
        )
    try:
        normalized = normalize_tf(proprio, stats.proprio, kind, proprio_mask)
    except (ValueError, TypeError) as e:
        raise type(e)(f"normalizing observation/{schema.PROPRIO}: {e}") from e
    out["observation"] = {**observation, schema.PROPRIO: normalized}
    return out

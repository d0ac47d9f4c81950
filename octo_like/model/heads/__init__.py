"""Action heads: readout embeddings in, action-chunk losses and samples out.

`BaseActionHead` is the interface the policy model uses and the one conditioning and
loss-masking path every head shares (see `octo_like.model.heads.base`). Heads are looked up by
name (`ACTION_HEADS`), the name stored in configs, so checkpoints never depend on Python import
paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flax import nnx

from octo_like.model.heads.base import (
    BaseActionHead,
    masked_mean,
    pool_readouts,
    valid_action_mask,
)
from octo_like.model.heads.continuous import ContinuousActionHead, L1ActionHead, MSEActionHead
from octo_like.model.heads.diffusion import DiffusionActionHead
from octo_like.model.heads.discrete import DiscreteActionHead
from octo_like.model.heads.flow import FlowMatchingActionHead

ACTION_HEADS: Mapping[str, type[BaseActionHead]] = MappingProxyType(
    {
        "diffusion": DiffusionActionHead,
        "l1": L1ActionHead,
        "mse": MSEActionHead,
        "discrete": DiscreteActionHead,
        "flow": FlowMatchingActionHead,
    }
)


def make_action_head(
    name: str,
    *,
    embedding_dim: int,
    action_dim: int,
    action_horizon: int,
    rngs: nnx.Rngs,
    **head_kwargs: Any,
) -> BaseActionHead:
    """Build the head registered as ``name`` with its head-specific keyword arguments."""
    if name not in ACTION_HEADS:
        raise KeyError(f"unknown action head {name!r}; known: {sorted(ACTION_HEADS)}")
    return ACTION_HEADS[name](
        embedding_dim=embedding_dim,
        action_dim=action_dim,
        action_horizon=action_horizon,
        rngs=rngs,
        **head_kwargs,
    )


__all__ = [
    "ACTION_HEADS",
    "BaseActionHead",
    "ContinuousActionHead",
    "DiffusionActionHead",
    "DiscreteActionHead",
    "FlowMatchingActionHead",
    "L1ActionHead",
    "MSEActionHead",
    "make_action_head",
    "masked_mean",
    "pool_readouts",
    "valid_action_mask",
]

"""Regression heads: pooled readout -> Dense -> the whole chunk, trained with L1 or MSE.

Predictions are squashed by ``max_action * tanh(x / max_action)``: near the identity for
normalized actions, but bounded, so a bad batch cannot push outputs far out of range.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.heads.base import BaseActionHead
from octo_like.model.heads.map_pooling import MAPPooling

LOSS_TYPES = ("l1", "mse")


class ContinuousActionHead(BaseActionHead):
    """Deterministic chunk regression; ``rng`` and ``sample_shape`` only broadcast the output."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        action_dim: int,
        action_horizon: int,
        rngs: nnx.Rngs,
        loss_type: str = "mse",
        max_action: float = 5.0,
        dtype: Any = None,
        loss_scale: str = "mean",
        use_map: bool = False,
        map_kwargs: dict[str, Any] | None = None,
    ):
        """`use_map`: pool the readouts with Octo's attention pooling (`MAPPooling`, its
        keywords in `map_kwargs`: num_heads 8, mlp_dim 4 d, dropout_rate 0.1) instead of the
        mean; Octo's L1 / MSE heads do by default."""
        super().__init__(
            embedding_dim=embedding_dim,
            action_dim=action_dim,
            action_horizon=action_horizon,
            loss_scale=loss_scale,
        )
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if max_action <= 0:
            raise ValueError(f"max_action must be > 0, got {max_action}")
        self.loss_type = loss_type
        self.max_action = float(max_action)
        self.map_head = (
            MAPPooling(embedding_dim, rngs=rngs, dtype=dtype, **(map_kwargs or {}))
            if use_map
            else None
        )
        self.proj = precision.Linear(embedding_dim, self.chunk_size, dtype=dtype, rngs=rngs)

    @property
    def loss_term(self) -> str:
        return self.loss_type

    def _predict(self, condition: jax.Array) -> jax.Array:
        """``float32[..., d] -> float32[..., H, A]``."""
        x = self.proj(condition).astype(jnp.float32)
        x = self.max_action * jnp.tanh(x / self.max_action)
        return x.reshape(x.shape[:-1] + (self.action_horizon, self.action_dim))

    def loss_terms(
        self, condition: jax.Array, actions: jax.Array, *, rng: jax.Array, train: bool
    ) -> dict[str, jax.Array]:
        """Squared and absolute error; the loss is the one `loss_type` names."""
        del rng, train  # no randomness: the head has no dropout
        error = self._predict(condition) - actions
        return {"mse": jnp.square(error), "l1": jnp.abs(error)}

    def predict_action(
        self,
        readouts: jax.Array,
        *,
        rng: jax.Array,
        sample_shape: tuple[int, ...] = (),
        train: bool = False,
    ) -> jax.Array:
        """``float32[*sample_shape, b, H, A]``; identical across ``sample_shape``."""
        del rng, train
        prediction = self._predict(self.last_condition(readouts))
        return jnp.broadcast_to(prediction, tuple(sample_shape) + prediction.shape)


def _fixed_loss_type(kwargs: dict[str, Any], loss_type: str) -> None:
    given = kwargs.setdefault("loss_type", loss_type)
    if given != loss_type:
        raise ValueError(f"this head's loss_type is {loss_type!r}; got loss_type={given!r}")


class L1ActionHead(ContinuousActionHead):
    """`ContinuousActionHead` with ``loss_type="l1"`` (registry name ``"l1"``)."""

    def __init__(self, **kwargs: Any):
        _fixed_loss_type(kwargs, "l1")
        super().__init__(**kwargs)


class MSEActionHead(ContinuousActionHead):
    """`ContinuousActionHead` with ``loss_type="mse"`` (registry name ``"mse"``)."""

    def __init__(self, **kwargs: Any):
        _fixed_loss_type(kwargs, "mse")
        super().__init__(**kwargs)

"""Classification head: each action dimension of each chunk step is one of ``num_bins`` bins.

Bins split ``[low, high]`` uniformly. The head's own default ``[-1, 1]`` matches BOUNDS
normalization; training configs tie the range to the data's normalization
(`octo_like.training.config.tie_discrete_bins`: ``[-3, 3]`` for NORMAL mean/std normalization).
Targets outside the range fall into the edge bins, so predictions never leave ``[low, high]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.heads.base import BaseActionHead


class DiscreteActionHead(BaseActionHead):
    """Pooled readout -> Dense -> logits ``[.., H, A, num_bins]``; cross-entropy per dimension.

    `predict_action` returns the centre of the most likely bin, the same for every sample,
    unless ``sample_temperature > 0``: then every entry of ``sample_shape`` draws its own bins
    from ``softmax(logits / sample_temperature)`` with ``rng``.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        action_dim: int,
        action_horizon: int,
        rngs: nnx.Rngs,
        num_bins: int = 256,
        low: float = -1.0,
        high: float = 1.0,
        sample_temperature: float = 0.0,
        dtype: Any = None,
    ):
        super().__init__(
            embedding_dim=embedding_dim, action_dim=action_dim, action_horizon=action_horizon
        )
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        if not high > low:
            raise ValueError(f"need high > low, got low={low}, high={high}")
        if sample_temperature < 0:
            raise ValueError(f"sample_temperature must be >= 0, got {sample_temperature}")
        self.num_bins = num_bins
        self.low = float(low)
        self.high = float(high)
        self.sample_temperature = float(sample_temperature)
        self.proj = precision.Linear(
            embedding_dim, self.chunk_size * num_bins, dtype=dtype, rngs=rngs
        )

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / self.num_bins

    def bin_centers(self) -> jax.Array:
        """``float32[num_bins]``."""
        return self.low + (jnp.arange(self.num_bins, dtype=jnp.float32) + 0.5) * self.bin_width

    def to_bins(self, actions: jax.Array) -> jax.Array:
        """``float[...] -> int32[...]``: bin index, values outside ``[low, high]`` clipped."""
        index = jnp.floor((actions.astype(jnp.float32) - self.low) / self.bin_width)
        return jnp.clip(index, 0, self.num_bins - 1).astype(jnp.int32)

    def from_bins(self, bins: jax.Array) -> jax.Array:
        """``int[...] -> float32[...]``: the bin centres."""
        return self.bin_centers()[bins]

    def logits(self, condition: jax.Array) -> jax.Array:
        """``float32[..., d] -> float32[..., H, A, num_bins]`` (``condition``: `condition`'s)."""
        x = self.proj(condition).astype(jnp.float32)
        return x.reshape(x.shape[:-1] + (self.action_horizon, self.action_dim, self.num_bins))

    def loss_terms(
        self, condition: jax.Array, actions: jax.Array, *, rng: jax.Array, train: bool
    ) -> dict[str, jax.Array]:
        """Cross-entropy of the target bins (the loss), accuracy, squared error of the centres."""
        del rng, train
        targets = self.to_bins(actions)
        logits = self.logits(condition)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        predicted = jnp.argmax(logits, axis=-1)
        return {
            "loss": nll,
            "accuracy": (predicted == targets).astype(jnp.float32),
            "mse": jnp.square(self.from_bins(predicted) - actions),
        }

    def predict_action(
        self,
        readouts: jax.Array,
        *,
        rng: jax.Array,
        sample_shape: tuple[int, ...] = (),
        train: bool = False,
        argmax: bool = False,
        temperature: float | None = None,
    ) -> jax.Array:
        """``float32[*sample_shape, b, H, A]`` bin centres for the last window step.

        Octo's call: `argmax` takes the most likely bins; `temperature` (None: the head's
        `sample_temperature`) divides the logits before sampling, 0 meaning argmax."""
        del train
        logits = self.logits(self.last_condition(readouts))
        sample_shape = tuple(sample_shape)
        temperature = self.sample_temperature if temperature is None else temperature
        if temperature > 0 and not argmax:
            bins = jax.random.categorical(
                rng, logits / temperature, shape=sample_shape + logits.shape[:-1]
            )
        else:
            bins = jnp.broadcast_to(jnp.argmax(logits, axis=-1), sample_shape + logits.shape[:-1])
        return self.from_bins(bins)

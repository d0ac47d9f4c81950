"""What every action head shares: its interface, input checks, conditioning and loss masking.

Every head takes one path, written once in `BaseActionHead`:

- conditioning: `BaseActionHead.condition` turns readouts into the head's input, the mean over
  the readout tokens (``float32[..., d]``); sampling reads the last window step's
  (`BaseActionHead.last_condition`).
- loss masking: `BaseActionHead.loss` checks shapes, zeroes padded actions, asks the head for
  per-element terms (`BaseActionHead.loss_terms`) and averages each over the valid elements.

A head states only what is its own: its network on the condition (`loss_terms`), which term is
the loss (`loss_term`) and how it samples (`predict_action`).

Shapes used throughout the heads:

- ``readouts``: ``float[b, w, n_readout, d]``, transformer outputs at the readout tokens.
- ``actions``: ``float32[b, w, H, A]``, normalized action chunks, one per window step.
- ``timestep_pad_mask``: ``bool[b, w]``; ``action_pad_mask``: ``bool[b, w, H, A]``.

A loss is the mean over valid elements only, valid meaning
``timestep_pad_mask[..., None, None] & action_pad_mask``; with nothing valid it is 0, not NaN.
With ``loss_scale="action_dim"`` every term is multiplied by ``A`` (Octo's heads "sum over the
action dimension instead of averaging"; its gradients are then A times the mean's, which moves
the point where a global-norm clip binds).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

LOSS_SCALES = ("mean", "action_dim")
HEAD_DRAW_KEYS = ("time", "noise")  # a diffusion / flow head's training draws (loss_terms)


def pool_readouts(readouts: jax.Array) -> jax.Array:
    """Mean over the readout tokens: ``float[..., n_readout, d] -> float32[..., d]``."""
    return jnp.mean(readouts.astype(jnp.float32), axis=-2)


def valid_action_mask(timestep_pad_mask: jax.Array, action_pad_mask: jax.Array) -> jax.Array:
    """``bool[b, w, H, A]``: elements that count in the loss."""
    return timestep_pad_mask[..., None, None].astype(bool) & action_pad_mask.astype(bool)


def zero_invalid(actions: jax.Array, mask: jax.Array) -> jax.Array:
    """``float32`` actions with invalid elements set to 0.

    Padded actions may hold anything (even NaN); zeroing them keeps them out of network inputs
    (diffusion/flow noise them) and out of gradients, where ``0 * NaN`` would still be NaN.
    """
    return jnp.where(mask, actions.astype(jnp.float32), 0.0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask``; 0 when nothing is valid.

    Masked entries are replaced (not multiplied) by zero, so a NaN or Inf there cannot leak in.
    """
    mask = jnp.broadcast_to(mask, values.shape)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)


def _expect_shape(name: str, array: jax.Array, expected: tuple[int | None, ...], what: str) -> None:
    shape = tuple(getattr(array, "shape", ()))
    ok = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )
    if not ok:
        raise ValueError(f"{name}: expected shape {what}, got {shape}")


class BaseActionHead(nnx.Module):
    """The interface the policy model uses, and the conditioning and loss-masking path.

    Subclasses define `loss_terms` and `predict_action` (and `loss_term` if their loss is not
    the term named ``"loss"``); they call `last_condition` to sample.
    """

    def __init__(
        self, *, embedding_dim: int, action_dim: int, action_horizon: int, loss_scale: str = "mean"
    ):
        if loss_scale not in LOSS_SCALES:
            raise ValueError(f"loss_scale must be one of {LOSS_SCALES}, got {loss_scale!r}")
        self.loss_scale = loss_scale
        for name, value in (
            ("embedding_dim", embedding_dim),
            ("action_dim", action_dim),
            ("action_horizon", action_horizon),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.embedding_dim = embedding_dim
        self.action_dim = action_dim
        self.action_horizon = action_horizon

    @property
    def chunk_size(self) -> int:
        """``H * A``: the flattened chunk the diffusion/flow networks act on."""
        return self.action_horizon * self.action_dim

    @property
    def loss_term(self) -> str:
        """Which of the `loss_terms` is the loss (reported as ``"loss"`` besides its own name)."""
        return "loss"

    def check_readouts(self, readouts: jax.Array) -> None:
        _expect_shape(
            "readouts",
            readouts,
            (None, None, None, self.embedding_dim),
            f"[b, w, n_readout, {self.embedding_dim}]",
        )

    def check_loss_inputs(
        self,
        readouts: jax.Array,
        actions: jax.Array,
        timestep_pad_mask: jax.Array,
        action_pad_mask: jax.Array,
    ) -> None:
        """Raise a ValueError naming the argument and the expected shape on any mismatch."""
        self.check_readouts(readouts)
        b, w = readouts.shape[:2]
        h, a = self.action_horizon, self.action_dim
        _expect_shape("actions", actions, (b, w, h, a), f"[b={b}, w={w}, H={h}, A={a}]")
        _expect_shape("timestep_pad_mask", timestep_pad_mask, (b, w), f"[b={b}, w={w}]")
        _expect_shape(
            "action_pad_mask", action_pad_mask, (b, w, h, a), f"[b={b}, w={w}, H={h}, A={a}]"
        )

    def condition(
        self,
        readouts: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        draws: Mapping[str, jax.Array] | None = None,
    ) -> jax.Array:
        """The head's input: ``float[..., n_readout, d] -> float32[..., d]``, the pooled readout
        (the mean, or with ``use_map`` Octo's attention pooling, `map_pooling.MAPPooling`, whose
        training dropout draws from `rng` or replays `draws`).

        One definition for training and sampling, so the two cannot read readouts differently.
        """
        pooling = getattr(self, "map_head", None)
        if pooling is None:
            return pool_readouts(readouts)
        return pooling(readouts, train=train, rng=rng, draws=draws)

    def last_condition(self, readouts: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """The condition of the last window step, ``float32[*sample_shape, b, d]``."""
        self.check_readouts(readouts)
        condition = self.condition(readouts[:, -1])
        return jnp.broadcast_to(condition, tuple(sample_shape) + condition.shape)

    def loss(
        self,
        readouts: jax.Array,
        actions: jax.Array,
        timestep_pad_mask: jax.Array,
        action_pad_mask: jax.Array,
        *,
        rng: jax.Array,
        train: bool,
        draws: Mapping[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar loss and metrics: every one of `loss_terms` averaged over valid elements
        (times ``A`` with ``loss_scale="action_dim"``).

        Metrics hold ``"loss"`` (the `loss_term`) and each term by name. Padded actions reach
        `loss_terms` as 0 and their terms are left out of every mean, so nothing in a padded
        element (even NaN) reaches the loss or the gradients. `draws`: the head's training
        draws given instead of drawn from `rng` (see `IterativeHead.loss_terms`), so a step
        can replay another program's randomness; only heads that draw take them.
        """
        self.check_loss_inputs(readouts, actions, timestep_pad_mask, action_pad_mask)
        mask = valid_action_mask(timestep_pad_mask, action_pad_mask)
        pool_rng = None
        if getattr(self, "map_head", None) is not None:
            rng, pool_rng = jax.random.split(rng)
        condition = self.condition(readouts, train=train, rng=pool_rng, draws=draws)
        head_draws = {k: v for k, v in (draws or {}).items() if k in HEAD_DRAW_KEYS}
        extra = {"draws": head_draws} if head_draws else {}
        terms = self.loss_terms(
            condition, zero_invalid(actions, mask), rng=rng, train=train, **extra
        )
        scale = float(self.action_dim) if self.loss_scale == "action_dim" else 1.0
        metrics = {name: masked_mean(values, mask) * scale for name, values in terms.items()}
        if self.loss_term not in metrics or ("loss" in metrics and self.loss_term != "loss"):
            raise KeyError(
                f"{type(self).__name__}.loss_terms gave {sorted(metrics)}: it must give its "
                f"loss term {self.loss_term!r}, and a term named 'loss' only as the loss term"
            )
        loss = metrics[self.loss_term]
        return loss, {"loss": loss, **metrics}

    def loss_terms(
        self, condition: jax.Array, actions: jax.Array, *, rng: jax.Array, train: bool
    ) -> dict[str, jax.Array]:
        """Per-element terms ``float32[b, w, H, A]`` by name (the loss and its metrics).

        ``condition``: ``float32[b, w, d]``; ``actions``: ``float32[b, w, H, A]`` with padded
        elements set to 0.
        """
        raise NotImplementedError(f"{type(self).__name__} must define loss_terms")

    def predict_action(
        self,
        readouts: jax.Array,
        *,
        rng: jax.Array,
        sample_shape: tuple[int, ...] = (),
        train: bool = False,
    ) -> jax.Array:
        """``float32[*sample_shape, b, H, A]``: chunks for the last window step only."""
        raise NotImplementedError(f"{type(self).__name__} must define predict_action")

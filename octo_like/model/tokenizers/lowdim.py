"""Proprioception tokenizer: float32[b, w, P] -> tokens per timestep.

Three layouts: ``linear`` (one token per timestep, Dense over all dims; padded dims are zeroed
first so they cannot leak), ``per_dim`` (one token per dim: ``value_i * w_i + e_i``, where
the per-dim embedding ``e_i`` also plays the role of a bias, so each token knows which joint it
carries and padded dims can be masked individually) and ``per_dim_value`` (one token per dim
holding only its value, ``float32[b, w, P, 1]``: Octo's ``LowdimObsTokenizer`` without
discretization, as its examples/02 fine-tunes with; the model's projection and per-dim
positional embedding then do the rest, so it has no parameters of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.tokens import TokenGroup
from octo_like.schema import PAD_MASK_DICT, PROPRIO, PROPRIO_PAD_MASK

PROPRIO_MODES = ("linear", "per_dim", "per_dim_value")


class ProprioTokenizer(nnx.Module):
    """Reads ``observations["proprio"]`` float[b, w, P] and its masks.

    Token mask = ``pad_mask_dict["proprio"]`` bool[b, w] AND ``proprio_pad_mask`` bool[b, w, P]
    (per dim in ``per_dim`` mode; "any real dim" in ``linear`` mode).
    Returns TokenGroup float32[b, w, 1, F] (linear) or float32[b, w, P, F] (per_dim; F = 1 for
    per_dim_value).
    """

    def __init__(
        self,
        proprio_dim: int,
        *,
        mode: str = "linear",
        num_features: int,
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        if mode not in PROPRIO_MODES:
            raise ValueError(f"ProprioTokenizer mode must be one of {PROPRIO_MODES}, got {mode!r}")
        if proprio_dim < 1:
            raise ValueError(f"ProprioTokenizer: proprio_dim must be >= 1, got {proprio_dim}")
        self.proprio_dim = proprio_dim
        self.mode = mode
        self.num_features = num_features
        if mode == "linear":
            self.dense = precision.Linear(proprio_dim, num_features, dtype=dtype, rngs=rngs)
        elif mode == "per_dim_value":
            if num_features != 1:
                raise ValueError(
                    f"ProprioTokenizer mode 'per_dim_value' makes 1-feature tokens (the value); "
                    f"num_features must be 1, got {num_features}"
                )
        else:
            init = nnx.initializers.normal(0.02)
            self.weight = nnx.Param(init(rngs.params(), (proprio_dim, num_features)))
            self.dim_embedding = nnx.Param(init(rngs.params(), (proprio_dim, num_features)))

    @property
    def num_tokens(self) -> int:
        return 1 if self.mode == "linear" else self.proprio_dim

    def __call__(self, observations: Mapping, tasks: Mapping | None = None) -> TokenGroup:
        """`tasks` is unused; accepted for a uniform tokenizer interface."""
        del tasks
        p = self.proprio_dim
        proprio = self._read(observations, (PROPRIO,), f"float32[b, w, {p}]")
        if proprio.ndim != 3 or proprio.shape[-1] != p:
            raise ValueError(
                f"observations[{PROPRIO!r}] must be float32[b, w, {p}], got {list(proprio.shape)}"
            )
        b, w = proprio.shape[:2]
        step_mask = self._read(observations, (PAD_MASK_DICT, PROPRIO), f"bool[{b}, {w}]")
        dim_mask = self._read(observations, (PROPRIO_PAD_MASK,), f"bool[{b}, {w}, {p}]")
        for name, mask, want in (
            (f"{PAD_MASK_DICT}.{PROPRIO}", step_mask, (b, w)),
            (PROPRIO_PAD_MASK, dim_mask, (b, w, p)),
        ):
            if tuple(mask.shape) != want:
                raise ValueError(
                    f"observations {name!r} must be bool{list(want)}, got {list(mask.shape)}"
                )
        dim_mask = dim_mask.astype(bool) & step_mask.astype(bool)[..., None]
        x = jnp.where(dim_mask, proprio.astype(jnp.float32), 0.0)
        if self.mode == "linear":
            tokens = self.dense(x)[:, :, None, :]
            return TokenGroup(tokens, jnp.any(dim_mask, axis=-1, keepdims=True))
        if self.mode == "per_dim_value":
            return TokenGroup(x[..., None], dim_mask)
        tokens = x[..., None] * self.weight[...] + self.dim_embedding[...]
        return TokenGroup(tokens, dim_mask)

    @staticmethod
    def _read(observations: Mapping, path: tuple[str, ...], expected: str) -> jax.Array:
        node = observations
        for i, key in enumerate(path):
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(
                    f"ProprioTokenizer: observations lack {'.'.join(path[: i + 1])!r}; "
                    f"expected {expected}"
                )
            node = node[key]
        return node

"""Runs token groups through one transformer under the attention rules of their specs.

Groups arrive already projected to the transformer width (with their positional embeddings);
this module only flattens them into one sequence (order in `tokens`), builds the mask from the
specs and the padding, and splits the outputs back into groups of the input shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model.tokens import (
    GroupSpec,
    TokenGroup,
    build_attention_mask,
    combine_with_padding,
    split_specs,
)
from octo_like.model.transformer import Transformer, TransformerConfig


def _check_names(kind: str, groups: Mapping[str, TokenGroup], specs: Sequence[GroupSpec]):
    expected, got = [s.name for s in specs], sorted(groups)
    if sorted(expected) != got:
        raise ValueError(
            f"BlockTransformer: {kind} groups {got} do not match the {kind} specs "
            f"{sorted(expected)} (missing: {sorted(set(expected) - set(got))}, unexpected: "
            f"{sorted(set(got) - set(expected))})"
        )


def _check_group(spec: GroupSpec, group: TokenGroup, lead: tuple[int, ...], width: int):
    """Tokens must be float[*lead, num_tokens, width] and the mask bool[*lead, num_tokens]."""
    want = (*lead, spec.num_tokens, width)
    names = "[b, n, d]" if spec.is_prefix else "[b, w, n, d]"
    if tuple(group.tokens.shape) != want:
        raise ValueError(
            f"BlockTransformer: group {spec.name!r} tokens must have shape {names} = {want}, "
            f"got {tuple(group.tokens.shape)}"
        )
    if tuple(group.mask.shape) != want[:-1]:
        raise ValueError(
            f"BlockTransformer: group {spec.name!r} mask must have shape {want[:-1]}, "
            f"got {tuple(group.mask.shape)}"
        )


class BlockTransformer(nnx.Module):
    """Transformer over prefix groups then, per timestep, the timestep groups."""

    def __init__(self, transformer_config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = transformer_config
        self.transformer = Transformer(transformer_config, rngs=rngs)

    def __call__(
        self,
        prefix_groups: Mapping[str, TokenGroup],
        timestep_groups: Mapping[str, TokenGroup],
        specs: Sequence[GroupSpec],
        *,
        timestep_pad_mask: jax.Array,
        train: bool,
        rng: jax.Array | None = None,
        unpadded: Sequence[str] = (),
    ) -> tuple[dict[str, TokenGroup], dict[str, TokenGroup]]:
        """Output embeddings per group, float32 of the input shapes.

        timestep_pad_mask: bool[b, w]; False steps are padding: AND'ed into the masks of every
        timestep group but those named in `unpadded` (returned masks include it), so no real
        token attends to them.
        """
        prefix_specs, step_specs = split_specs(specs)
        if not prefix_specs and not step_specs:
            raise ValueError("BlockTransformer: specs must describe at least one group")
        _check_names("prefix", prefix_groups, prefix_specs)
        _check_names("timestep", timestep_groups, step_specs)
        if timestep_pad_mask.ndim != 2:
            raise ValueError(
                "BlockTransformer: timestep_pad_mask must be bool[b, w], got "
                f"{timestep_pad_mask.shape}"
            )
        b, w = timestep_pad_mask.shape
        d = self.config.width
        for s in prefix_specs:
            _check_group(s, prefix_groups[s.name], (b,), d)
        for s in step_specs:
            _check_group(s, timestep_groups[s.name], (b, w), d)

        step_valid = timestep_pad_mask.astype(bool)[:, :, None]
        unknown = sorted(set(unpadded) - {s.name for s in step_specs})
        if unknown:
            raise ValueError(f"BlockTransformer: unpadded names no timestep group: {unknown}")
        step_masks = [
            timestep_groups[s.name].mask.astype(bool) & (True if s.name in unpadded else step_valid)
            for s in step_specs
        ]
        tokens = [prefix_groups[s.name].tokens for s in prefix_specs]
        masks = [prefix_groups[s.name].mask.astype(bool) for s in prefix_specs]
        if step_specs:
            # [b, w, n_step, d] -> [b, w * n_step, d]: timestep-major, groups in spec order.
            step_tokens = jnp.concatenate([timestep_groups[s.name].tokens for s in step_specs], 2)
            tokens.append(step_tokens.reshape(b, -1, d))
            masks.append(jnp.concatenate(step_masks, axis=2).reshape(b, -1))
        dtype = jnp.result_type(*tokens)
        x = jnp.concatenate([t.astype(dtype) for t in tokens], axis=1)
        token_mask = jnp.concatenate(masks, axis=1)

        rule_mask = build_attention_mask(prefix_specs, step_specs, w)
        attention_mask = combine_with_padding(rule_mask, token_mask)
        y = self.transformer(x, attention_mask, train=train, rng=rng)

        prefix_out, start = {}, 0
        for s in prefix_specs:
            prefix_out[s.name] = TokenGroup(
                y[:, start : start + s.num_tokens], prefix_groups[s.name].mask.astype(bool)
            )
            start += s.num_tokens
        step_out = {}
        if step_specs:
            steps = y[:, start:].reshape(b, w, -1, d)
            offset = 0
            for s, mask in zip(step_specs, step_masks, strict=True):
                step_out[s.name] = TokenGroup(steps[:, :, offset : offset + s.num_tokens], mask)
                offset += s.num_tokens
        return prefix_out, step_out

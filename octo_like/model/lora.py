"""Low-rank adapters (LoRA) on the transformer's dense layers, for parameter-efficient fine-tuning.

A targeted Linear layer (attention ``query``/``key``/``value``/``out``, MLP ``fc1``/``fc2``) is
replaced by a `LoraLinear` that keeps the SAME ``kernel`` and ``bias`` variables (so their paths,
e.g. ``transformer/transformer/blocks/0/attention/query/kernel``, still match a pretrained
checkpoint) and adds two small matrices beside them::

    y = x W + b + (alpha / rank) * (x A) B        A float32[d_in, r], B float32[r, d_out]

``B`` starts at zero, so an adapted model computes exactly what its base computes until the first
update. The adapters are the parameters ``.../lora_a`` and ``.../lora_b``: `ADAPTER_PATTERN`
selects them (e.g. to train only them). `octo_model.merge_lora` folds them back into plain
dense layers for export.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.config import LoraConfig

# Regex (re.search on slash-joined parameter paths) of every adapter parameter.
ADAPTER_PATTERN = r"(^|/)lora_[ab]$"
# He-uniform-like scale for A: the adapter's first projection keeps the input's variance.
_A_INIT = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")


class LoraLinear(precision.Linear):
    """`precision.Linear` plus a zero-initialized low-rank update; see the module docstring.

    Build it with `LoraLinear.wrap(linear, ...)`: the base layer's kernel and bias variables are
    taken over (not copied), so the parameter tree keeps the base layer's paths.
    """

    @classmethod
    def wrap(cls, base: precision.Linear, rank: int, alpha: float, *, rngs: nnx.Rngs) -> LoraLinear:
        if type(base) is not precision.Linear:
            raise TypeError(f"LoraLinear.wrap expects a Linear layer, got {type(base).__name__}")
        d_in, d_out = base.kernel.shape
        # Zeros-initialized throwaway kernel (replaced below); a fixed key leaves `rngs` alone.
        layer = cls(
            d_in, d_out, use_bias=base.bias is not None, dtype=base.dtype,
            kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0),
        )  # fmt: skip
        layer.kernel = base.kernel
        layer.bias = base.bias
        layer.scale = float(alpha) / rank
        layer.lora_a = nnx.Param(_A_INIT(rngs.params(), (d_in, rank), jnp.float32))
        layer.lora_b = nnx.Param(jnp.zeros((rank, d_out), jnp.float32))
        return layer

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """inputs float[..., d_in] -> float[..., d_out] (adapter gradients in float32)."""
        y = super().__call__(inputs)
        x = inputs.astype(self.dtype)
        low = precision.matmul(precision.matmul(x, self.lora_a[...]), self.lora_b[...])
        return y + (low * self.scale).astype(y.dtype)

    def merged(self) -> precision.Linear:
        """A plain `precision.Linear` computing the same function: kernel ``W + scale * A B``."""
        d_in, d_out = self.kernel.shape
        layer = precision.Linear(
            d_in, d_out, use_bias=self.bias is not None, dtype=self.dtype,
            kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0),
        )  # fmt: skip
        delta = (self.lora_a[...] @ self.lora_b[...]) * self.scale
        layer.kernel = nnx.Param(self.kernel[...] + delta.astype(self.kernel[...].dtype))
        layer.bias = self.bias
        return layer


def _targets(transformer: nnx.Module, names: tuple[str, ...]) -> Iterator[tuple[nnx.Module, str]]:
    """(parent module, attribute name) of every `precision.Linear` attribute named in `names`."""
    for _, module in nnx.iter_modules(transformer):
        for name in names:
            child = getattr(module, name, None)
            if isinstance(child, precision.Linear):
                yield module, name


def apply_lora(transformer: nnx.Module, config: LoraConfig, *, rngs: nnx.Rngs) -> int:
    """Replaces the targeted dense layers of `transformer` in place; returns how many.

    `transformer`: the policy's `BlockTransformer` (the language encoder is not adapted: it is
    either frozen T5 or a small encoder trained from scratch). Raises ValueError when no layer
    matches `config.targets`, and TypeError on a layer that is already adapted.
    """
    found = list(_targets(transformer, config.targets))
    if not found:
        raise ValueError(f"LoRA: no dense layer named any of {config.targets} in the transformer")
    for parent, name in found:
        layer = getattr(parent, name)
        if isinstance(layer, LoraLinear):
            raise TypeError(f"LoRA: layer {name!r} already has adapters")
        setattr(parent, name, LoraLinear.wrap(layer, config.rank, config.alpha, rngs=rngs))
    return len(found)


def merge_adapters(module: nnx.Module, targets: tuple[str, ...]) -> nnx.Module:
    """A copy of `module` where each `LoraLinear` named in `targets` is a `precision.Linear` with
    kernel ``W + (alpha / rank) A B`` (the same function); `module` is left untouched.

    `octo_like.model.octo_model.merge_lora` applies it to a whole `OctoModel`.
    """
    graphdef, state = nnx.split(module)
    merged = nnx.merge(graphdef, state)  # a copy
    for _, parent in list(nnx.iter_modules(merged)):
        for name in targets:
            layer = getattr(parent, name, None)
            if isinstance(layer, LoraLinear):
                setattr(parent, name, layer.merged())
    return merged

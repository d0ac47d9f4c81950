"""Pre-LayerNorm transformer encoder with an explicit attention mask, and size presets.

Each block: ``x + Dropout(MHA(LN(x)))`` then ``x + MLP(LN(x))`` (gelu), closed by a final
LayerNorm. Parameters are float32; activations are computed in ``config.dtype`` (softmax, the
LayerNorm statistics and the final LayerNorm in float32, so bfloat16 runs stay close to float32
ones). Dropout keys are explicit arrays, not stateful RNG streams, so the step function stays pure.

Memory and compile options, none of which changes the parameters or their paths:
- ``remat``: what a block keeps for its backward pass (`REMAT_POLICIES`): ``none`` keeps every
  activation, ``full`` recomputes the block, ``dots_saveable`` keeps only matmul outputs,
  ``dots_no_batch`` keeps matmul outputs without batch dimensions (the weights' gradients).
- ``scan_layers``: runs the blocks as one `lax.scan` over their stacked parameters, so XLA
  compiles one block instead of ``num_layers`` (faster compiles for deep models; the stacking
  copies the transformer's weights once per step).
- ``attention``: the implementation (see `octo_like.model.attention`); ``auto`` picks by backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.attention import (
    ATTENTION_IMPLEMENTATIONS,
    accelerator_platform,
    attend,
    resolve_implementation,
)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_KERNEL_INIT = nnx.initializers.xavier_uniform()
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_no_batch")


def remat_policy_name(remat) -> str:
    """Accepts the older boolean form (False = none, True = full) of saved configs."""
    if isinstance(remat, bool):
        return "full" if remat else "none"
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {list(REMAT_POLICIES)}, got {remat!r}")
    return remat


def _checkpoint_policy(remat: str):
    return {
        "full": None,
        "dots_saveable": jax.checkpoint_policies.dots_saveable,
        "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[remat]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Size and regularization of the encoder; `dtype` is the compute dtype."""

    num_layers: int
    width: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = False
    attention: str = "auto"
    # The platform the program is compiled for ('cpu', 'tpu', 'cuda', 'rocm'); '' = JAX's
    # default backend. A compile check for a TPU pod on a CPU host sets 'tpu' so that
    # attention 'auto' resolves for the target, not for the host.
    platform: str = ""

    def __post_init__(self):
        object.__setattr__(self, "remat", remat_policy_name(self.remat))
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"TransformerConfig.attention must be one of {list(ATTENTION_IMPLEMENTATIONS)}, "
                f"got {self.attention!r}"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"TransformerConfig.dtype must be one of {list(_DTYPES)}, got {self.dtype!r}"
            )
        if min(self.num_layers, self.width, self.num_heads, self.mlp_dim) < 1:
            raise ValueError(f"TransformerConfig sizes must be positive: {self}")
        if self.width % self.num_heads:
            raise ValueError(
                f"TransformerConfig.width ({self.width}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"TransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )

    @property
    def compute_dtype(self) -> jnp.dtype:
        return _DTYPES[self.dtype]


TRANSFORMER_PRESETS: Mapping[str, TransformerConfig] = MappingProxyType(
    {
        # micro: the smallest transformer with more than one layer (the Octo import fixture)
        "micro": TransformerConfig(num_layers=2, width=32, num_heads=2, mlp_dim=64),
        "dummy": TransformerConfig(num_layers=1, width=64, num_heads=2, mlp_dim=128),
        "tiny": TransformerConfig(num_layers=4, width=192, num_heads=3, mlp_dim=768),
        "small": TransformerConfig(num_layers=12, width=384, num_heads=6, mlp_dim=1536),
        "base": TransformerConfig(num_layers=12, width=768, num_heads=12, mlp_dim=3072),
    }
)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None or rate is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _split(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


class SelfAttention(nnx.Module):
    """Multi-head self-attention under a boolean (query, key) mask."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        d, dt = config.width, config.compute_dtype
        self.num_heads = config.num_heads
        self.attention_dropout_rate = config.attention_dropout_rate
        self.implementation = config.attention
        self.platform = config.platform

        def dense() -> precision.Linear:
            return precision.Linear(d, d, dtype=dt, kernel_init=_KERNEL_INIT, rngs=rngs)

        self.query, self.key, self.value, self.out = dense(), dense(), dense(), dense()

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
        """x: float[b, N, d]; mask: bool[b, 1, N, N] -> float[b, N, d]."""
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = (f(x).reshape(b, n, h, d // h) for f in (self.query, self.key, self.value))
        if key is None or self.attention_dropout_rate == 0:
            implementation = resolve_implementation(
                self.implementation,
                platform=self.platform or accelerator_platform(),
                dtype=q.dtype,
                head_dim=d // h,
                seq_len=n,
            )
            return self.out(attend(q, k, v, mask, implementation).reshape(b, n, d))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(d // h)
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        weights = _dropout(weights, self.attention_dropout_rate, key)
        out = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, n, d)
        return self.out(out)


class MlpBlock(nnx.Module):
    """Dense(mlp_dim) -> gelu -> dropout -> Dense(width) -> dropout."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        dt = config.compute_dtype
        self.rate = config.dropout_rate
        self.fc1 = precision.Linear(
            config.width, config.mlp_dim, dtype=dt, kernel_init=_KERNEL_INIT, rngs=rngs
        )
        self.fc2 = precision.Linear(
            config.mlp_dim, config.width, dtype=dt, kernel_init=_KERNEL_INIT, rngs=rngs
        )

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        k1, k2 = _split(key, 2)
        x = _dropout(jax.nn.gelu(self.fc1(x)), self.rate, k1)
        return _dropout(self.fc2(x), self.rate, k2)


class EncoderBlock(nnx.Module):
    """One pre-LN block: LN -> MHA -> residual; LN -> MLP -> residual."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        dt = config.compute_dtype
        self.rate = config.dropout_rate
        self.ln_attention = precision.LayerNorm(config.width, dtype=dt, rngs=rngs)
        self.attention = SelfAttention(config, rngs=rngs)
        self.ln_mlp = precision.LayerNorm(config.width, dtype=dt, rngs=rngs)
        self.mlp = MlpBlock(config, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
        k_att, k_res, k_mlp = _split(key, 3)
        y = self.attention(self.ln_attention(x), mask, k_att)
        x = x + _dropout(y, self.rate, k_res)
        return x + self.mlp(self.ln_mlp(x), k_mlp)


def _block_function(graphdef: nnx.GraphDef, remat: str):
    """(block state, x, mask, key) -> x: a block as a pure function, rematerialized per `remat`."""

    def apply(state, x, mask, key):
        return nnx.merge(graphdef, state)(x, mask, key)

    if remat == "none":
        return apply
    return jax.checkpoint(apply, policy=_checkpoint_policy(remat))


class Transformer(nnx.Module):
    """Stack of `EncoderBlock`s plus a final LayerNorm."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.blocks = nnx.List([EncoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_final = precision.LayerNorm(config.width, dtype=jnp.float32, rngs=rngs)

    def __call__(
        self, x: jax.Array, mask: jax.Array, *, train: bool, rng: jax.Array | None = None
    ) -> jax.Array:
        """x: float[b, N, d]; mask: bool[b, 1, N, N] (query, key) -> float32[b, N, d].

        Dropout runs only when `train`; it then needs `rng` if any dropout rate is non-zero.
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.width:
            raise ValueError(f"Transformer input must be float[b, N, {cfg.width}], got {x.shape}")
        b, n, _ = x.shape
        if mask.ndim != 4 or mask.shape[1:] != (1, n, n) or mask.shape[0] not in (1, b):
            raise ValueError(f"Transformer mask must be bool[{b}, 1, {n}, {n}], got {mask.shape}")
        uses_dropout = train and (cfg.dropout_rate > 0 or cfg.attention_dropout_rate > 0)
        if uses_dropout and rng is None:
            raise ValueError("Transformer: train=True with dropout needs an `rng` key")
        keys = _split(rng if uses_dropout else None, cfg.num_layers)

        x = x.astype(cfg.compute_dtype)
        mask = mask.astype(bool)
        split = [nnx.split(block) for block in self.blocks]
        if cfg.scan_layers:
            graphdef = split[0][0]
            if any(g != graphdef for g, _ in split[1:]):
                raise ValueError("scan_layers needs blocks of one structure (e.g. LoRA on all)")
            run = _block_function(graphdef, cfg.remat)
            stacked = jax.tree.map(lambda *layers: jnp.stack(layers), *[s for _, s in split])
            layer_keys = None if keys[0] is None else jnp.stack(keys)

            def body(x, layer):
                state, key = layer
                return run(state, x, mask, key), None

            x, _ = jax.lax.scan(body, x, (stacked, layer_keys))
        else:
            for (graphdef, state), key in zip(split, keys, strict=True):
                x = _block_function(graphdef, cfg.remat)(state, x, mask, key)
        return self.ln_final(x.astype(jnp.float32))


def count_params(module: nnx.Module) -> int:
    """Number of scalar parameters (`nnx.Param`) in a module."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))

"""The T5 encoder in Flax NNX, laid out so Hugging Face T5 weights map onto it one to one.

T5 differs from a textbook transformer in ways that matter for loading pretrained weights:
pre-norm with RMS norm ("T5 LayerNorm": no mean subtraction, no bias), attention logits without
the 1/sqrt(d) scaling (folded into the initialization), no absolute positions but a learned
relative position bias over log-spaced buckets that layer 0 owns and all layers share, and bias-
free dense layers. Parameters stay float32; ``dtype`` is the compute dtype of the matmuls, while
norms, softmax and the residual stream run in float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from octo_like import storage
from octo_like.model import precision

FEED_FORWARD_PROJECTIONS = ("relu", "gated-gelu")
SUPPORTED_MODEL_TYPES = ("t5", "mt5")
_REQUIRED_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
    """The encoder fields of a Hugging Face T5 ``config.json`` (defaults are HF's defaults)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: str = "relu"
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.1

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                    raise TypeError(f"T5 config {field.name} must be an int, got {value!r}")
                if value < 1:
                    raise ValueError(f"T5 config {field.name} must be >= 1, got {value}")
            elif field.type == "float" and (
                not isinstance(value, (int, float, np.floating)) or isinstance(value, bool)
            ):
                raise TypeError(f"T5 config {field.name} must be a number, got {value!r}")
        if self.feed_forward_proj not in FEED_FORWARD_PROJECTIONS:
            raise ValueError(
                f"T5 config feed_forward_proj must be one of {FEED_FORWARD_PROJECTIONS}, "
                f"got {self.feed_forward_proj!r}"
            )
        if self.relative_attention_num_buckets < 4 or self.relative_attention_num_buckets % 2:
            raise ValueError(
                "T5 config relative_attention_num_buckets must be even and >= 4 (half per "
                f"direction), got {self.relative_attention_num_buckets}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5 config dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"T5 config layer_norm_epsilon must be > 0: {self.layer_norm_epsilon}")

    @classmethod
    def from_json(cls, path_or_dict: str | os.PathLike | dict[str, Any]) -> T5EncoderConfig:
        """Reads an HF ``config.json`` (a path, a checkpoint directory, or the parsed dict).

        Missing encoder fields without an HF default raise, naming them. Fields that are not
        encoder fields (decoder, generation, ``architectures``, ...) are ignored, since every HF
        config carries many of them.
        """
        if isinstance(path_or_dict, dict):
            raw, source = path_or_dict, "config dict"
        else:
            source = storage.absolute(path_or_dict)
            if storage.isdir(source):
                source = storage.join(source, "config.json")
            if not storage.isfile(source):
                raise FileNotFoundError(f"T5 config not found: {source}")
            raw = json.loads(storage.read_text(source))
            if not isinstance(raw, dict):
                raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type", "t5")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not a T5 encoder "
                f"(supported: {SUPPORTED_MODEL_TYPES})"
            )
        missing = [name for name in _REQUIRED_FIELDS if name not in raw]
        if missing:
            raise ValueError(f"{source}: missing T5 config fields {missing}")
        names = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except (TypeError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None

    def to_hf_dict(self, architectures: tuple[str, ...] = ("T5EncoderModel",)) -> dict[str, Any]:
        """An HF-style ``config.json`` body (decoder mirrors the encoder, as in T5)."""
        return {
            "architectures": list(architectures),
            "model_type": "t5",
            **dataclasses.asdict(self),
            "num_decoder_layers": self.num_layers,
            "is_encoder_decoder": True,
            "is_gated_act": self.feed_forward_proj.startswith("gated"),
            "dense_act_fn": "gelu_new" if self.feed_forward_proj == "gated-gelu" else "relu",
            "initializer_factor": 1.0,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "decoder_start_token_id": 0,
            "tie_word_embeddings": False,
        }


def relative_position_bucket(
    relative_position: jax.Array | np.ndarray, *, num_buckets: int, max_distance: int
) -> jax.Array:
    """Bidirectional T5 bucketing of ``key_position - query_position`` (int[...] -> int32[...]).

    Half of the buckets encode the sign (keys after the query get ``+num_buckets // 2``). Within a
    half, distances below ``max_exact = num_buckets // 4`` each get their own bucket; larger ones
    share log-spaced buckets up to ``max_distance``, beyond which all fall into the last bucket.
    """
    half = num_buckets // 2
    max_exact = half // 2
    relative_position = jnp.asarray(relative_position, jnp.int32)
    offset = jnp.where(relative_position > 0, half, 0)
    distance = jnp.abs(relative_position)
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (half - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, half - 1)
    return (offset + jnp.where(distance < max_exact, distance, large)).astype(jnp.int32)


class T5RMSNorm(nnx.Module):
    """Scale-only RMS norm, computed in float32, returned in the compute dtype."""

    def __init__(self, features: int, *, epsilon: float, dtype: Any):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
        return (self.scale[...] * x).astype(self.dtype)


def _dense(in_features: int, out_features: int, std: float, *, dtype: Any, rngs: nnx.Rngs):
    return precision.Linear(
        in_features,
        out_features,
        use_bias=False,
        dtype=dtype,
        kernel_init=nnx.initializers.normal(std),
        rngs=rngs,
    )


class T5SelfAttention(nnx.Module):
    """Multi-head self-attention without logit scaling; ``position_bias`` is added to logits."""

    def __init__(self, config: T5EncoderConfig, *, rngs: nnx.Rngs, dtype: Any):
        d, inner = config.d_model, config.num_heads * config.d_kv
        # T5 puts the missing 1/sqrt(d_kv) into the query initialization.
        self.query = _dense(d, inner, (d * config.d_kv) ** -0.5, dtype=dtype, rngs=rngs)
        self.key = _dense(d, inner, d**-0.5, dtype=dtype, rngs=rngs)
        self.value = _dense(d, inner, d**-0.5, dtype=dtype, rngs=rngs)
        self.out = _dense(inner, d, inner**-0.5, dtype=dtype, rngs=rngs)
        self.attention_dropout = nnx.Dropout(config.dropout_rate)
        self.num_heads = config.num_heads
        self.head_dim = config.d_kv
        self.dtype = dtype

    def __call__(
        self,
        x: jax.Array,
        position_bias: jax.Array,
        key_mask: jax.Array,
        *,
        train: bool,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """x: [b, L, d]; position_bias: float32[h, L, L]; key_mask: bool[b, L] -> [b, L, d]."""
        b, length, _ = x.shape
        heads = (b, length, self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads)
        k = self.key(x).reshape(heads)
        v = self.value(x).reshape(heads)
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits + position_bias[None]
        # Padded keys get the lowest logit; a row with no valid key becomes uniform, not NaN.
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = self.attention_dropout(weights, deterministic=not train, rngs=rngs)
        mixed = jnp.einsum("bhqk,bkhc->bqhc", weights.astype(self.dtype), v)
        return self.out(mixed.reshape(b, length, self.num_heads * self.head_dim))


class T5FeedForward(nnx.Module):
    """``relu``: wo(relu(wi x)); ``gated-gelu``: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

    def __init__(self, config: T5EncoderConfig, *, rngs: nnx.Rngs, dtype: Any):
        d, ff = config.d_model, config.d_ff
        self.gated = config.feed_forward_proj == "gated-gelu"
        if self.gated:
            self.wi_0 = _dense(d, ff, d**-0.5, dtype=dtype, rngs=rngs)
            self.wi_1 = _dense(d, ff, d**-0.5, dtype=dtype, rngs=rngs)
        else:
            self.wi = _dense(d, ff, d**-0.5, dtype=dtype, rngs=rngs)
        self.wo = _dense(ff, d, ff**-0.5, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.gated:
            hidden = jax.nn.gelu(self.wi_0(x), approximate=True) * self.wi_1(x)
        else:
            hidden = jax.nn.relu(self.wi(x))
        return self.wo(self.dropout(hidden, deterministic=not train, rngs=rngs))


class T5Block(nnx.Module):
    """Pre-norm residual block: self-attention, then feed-forward."""

    def __init__(self, config: T5EncoderConfig, *, rngs: nnx.Rngs, dtype: Any):
        eps = config.layer_norm_epsilon
        self.attention_norm = T5RMSNorm(config.d_model, epsilon=eps, dtype=dtype)
        self.attention = T5SelfAttention(config, rngs=rngs, dtype=dtype)
        self.feed_forward_norm = T5RMSNorm(config.d_model, epsilon=eps, dtype=dtype)
        self.feed_forward = T5FeedForward(config, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(
        self,
        x: jax.Array,
        position_bias: jax.Array,
        key_mask: jax.Array,
        *,
        train: bool,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """x: float32[b, L, d] residual stream -> float32[b, L, d]."""
        normed = self.attention_norm(x)
        update = self.attention(normed, position_bias, key_mask, train=train, rngs=rngs)
        x = x + self.dropout(update, deterministic=not train, rngs=rngs).astype(jnp.float32)
        update = self.feed_forward(self.feed_forward_norm(x), train=train, rngs=rngs)
        return x + self.dropout(update, deterministic=not train, rngs=rngs).astype(jnp.float32)


class T5Encoder(nnx.Module):
    """T5 encoder stack: embeddings -> blocks sharing one relative position bias -> RMS norm."""

    def __init__(self, config: T5EncoderConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.config = config
        self.dtype = dtype
        self.token_embedding = nnx.Embed(
            config.vocab_size,
            config.d_model,
            embedding_init=nnx.initializers.normal(1.0),
            rngs=rngs,
        )
        # HF stores this table in block 0's attention; all blocks reuse it.
        self.relative_attention_bias = nnx.Embed(
            config.relative_attention_num_buckets,
            config.num_heads,
            embedding_init=nnx.initializers.normal(config.d_model**-0.5),
            rngs=rngs,
        )
        self.layers = nnx.List(
            [T5Block(config, rngs=rngs, dtype=dtype) for _ in range(config.num_layers)]
        )
        self.final_norm = T5RMSNorm(config.d_model, epsilon=config.layer_norm_epsilon, dtype=dtype)
        # No dropout holds an RNG stream of its own (each call gets one from `dropout_rngs`): the
        # module carries no RNG state a jitted step could mutate, or a resumed run redraw.
        self.dropout = nnx.Dropout(config.dropout_rate)

    def position_bias(self, length: int) -> jax.Array:
        """float32[num_heads, L, L]: bias for query i attending to key j."""
        positions = np.arange(length)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None],
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )
        return jnp.transpose(self.relative_attention_bias.embedding[...][buckets], (2, 0, 1))

    def __call__(
        self,
        tokens: jax.Array,
        mask: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """tokens: int32[b, L], mask: bool[b, L] (False = padding) -> dtype[b, L, d_model].

        Outputs at padded positions are computed but meaningless; downstream masks them.
        Dropout (training a trainable encoder) draws from `rng`, never from state kept in the
        module, so a jitted step stays pure and a resumed run draws the same masks.
        """
        mask = check_tokens_and_mask(tokens, mask)
        rngs = dropout_rngs(train, self.config.dropout_rate, rng, "T5Encoder")
        x = self.token_embedding(tokens).astype(jnp.float32)
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        bias = self.position_bias(tokens.shape[1])
        for layer in self.layers:
            x = layer(x, bias, mask, train=train, rngs=rngs)
        return self.dropout(self.final_norm(x), deterministic=not train, rngs=rngs)


def dropout_rngs(train: bool, rate: float, rng: jax.Array | None, who: str) -> nnx.Rngs | None:
    """The call's dropout stream: a fresh `nnx.Rngs` on `rng` while training with dropout."""
    if not train or rate == 0.0:
        return None
    if rng is None:
        raise ValueError(f"{who}: train=True with dropout rate {rate} needs an `rng` key")
    return nnx.Rngs(dropout=rng)


def check_tokens_and_mask(tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Validates shapes/dtypes (static, so it also works under jit); returns the bool mask."""
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be int[b, L], got {tokens.dtype}{list(tokens.shape)}")
    if mask.shape != tokens.shape:
        raise ValueError(
            f"mask must be bool{list(tokens.shape)} like tokens, got {mask.dtype}{list(mask.shape)}"
        )
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise ValueError(f"mask must be bool (or 0/1 integers), got {mask.dtype}")
    return mask.astype(jnp.bool_)

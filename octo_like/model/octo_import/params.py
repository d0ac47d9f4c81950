"""Octo-1.5's parameter tree mapped onto an `OctoModule`'s: every Octo array used exactly once,
every octo_like array filled, reshapes only.

Octo path (flax linen, under ``params``) -> octo_like path:
- ``octo_transformer/observation_tokenizers_C/SmallStem16_0/{StdConv_i, GroupNorm_i,
  embedding}`` -> ``image_tokenizers/C/encoder/{convs/i, norms/i, patch}``
- ``octo_transformer/obs_C_projection``, ``obs_C_pos_embedding`` -> ``image_projections/C``,
  ``image_positions/C`` (positional embeddings lose Octo's leading axis of 1)
- ``octo_transformer/task_language_{projection, pos_embedding}`` ->
  ``language_{projection, position}``; ``readout_action_pos_embedding`` -> ``readout_position``
- ``octo_transformer/task_tokenizers_language/hf_model/...`` (Flax T5) -> ``language_encoder``
- ``octo_transformer/BlockTransformer_0/Transformer_0/encoderblock_i/{LayerNorm_0, LayerNorm_1,
  MultiHeadDotProductAttention_0, MlpBlock_0/Dense_0|1}`` -> ``transformer/transformer/
  blocks/i/{ln_attention, ln_mlp, attention, mlp/fc1|fc2}``; q/k/v kernels (D, h, D/h) and the
  out kernel (h, D/h, D) become (D, D); ``encoder_norm`` -> ``ln_final``
- ``heads_action/diffusion_model/{time_preprocess, cond_encoder/Dense_0|1}`` ->
  ``head/network/time_embedding/{fourier, hidden|out}`` (Fourier kernel (K, 1) -> (K,));
  ``reverse_network/{Dense_0, Dense_1, MLPResNetBlock_i/{LayerNorm_0, Dense_0, Dense_1}}`` ->
  ``head/network/{proj_in, proj_out, blocks/i/{norm, up, down}}``
- fine-tuned by Octo's examples/02: ``obs_proprio_{projection, pos_embedding}`` ->
  ``proprio_{projection, position}`` (proprio mode ``per_dim_value``); ``heads_action/
  {mean_proj, map_head/{probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0/Dense_0|1}}``
  -> ``head/{proj, map_head/{probe, attention, norm, mlp/fc1|fc2}}``
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Path = tuple[str, ...]
Rule = tuple[str, str, Callable[[np.ndarray], np.ndarray]]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _drop_leading_one(x: np.ndarray) -> np.ndarray:
    if x.shape[0] != 1:
        raise ValueError(f"expected a leading axis of 1, got {x.shape}")
    return x[0]


def _heads_in(x: np.ndarray) -> np.ndarray:
    """q/k/v kernel (D, h, c) -> (D, h*c); bias (h, c) -> (h*c,)."""
    return x.reshape(*x.shape[:-2], -1)


def _heads_out(x: np.ndarray) -> np.ndarray:
    """out kernel (h, c, D) -> (h*c, D)."""
    return x.reshape(-1, x.shape[-1])


def _fourier(x: np.ndarray) -> np.ndarray:
    """Octo's (K, 1) frequency matrix over a scalar time -> octo_like's (K,)."""
    if x.ndim != 2 or x.shape[1] != 1:
        raise ValueError(f"expected Fourier kernel (K, 1), got {x.shape}")
    return x[:, 0]


def _t5_rules() -> list[Rule]:
    """Flax T5 encoder paths (Hugging Face names) -> octo_like's T5Encoder."""
    t5 = "octo_transformer/task_tokenizers_language/hf_model/"
    block = t5 + r"encoder/block/(\d+)/layer/"
    to = r"language_encoder/layers/\1/"
    return [
        (t5 + "shared/embedding", "language_encoder/token_embedding/embedding", _same),
        (
            block + r"0/SelfAttention/relative_attention_bias/embedding",
            "language_encoder/relative_attention_bias/embedding",
            _same,
        ),
        (block + r"0/SelfAttention/q/kernel", to + "attention/query/kernel", _same),
        (block + r"0/SelfAttention/k/kernel", to + "attention/key/kernel", _same),
        (block + r"0/SelfAttention/v/kernel", to + "attention/value/kernel", _same),
        (block + r"0/SelfAttention/o/kernel", to + "attention/out/kernel", _same),
        (block + r"0/layer_norm/weight", to + "attention_norm/scale", _same),
        (
            block + r"1/DenseReluDense/(wi|wi_0|wi_1|wo)/kernel",
            to + r"feed_forward/\2/kernel",
            _same,
        ),
        (block + r"1/layer_norm/weight", to + "feed_forward_norm/scale", _same),
        (t5 + "encoder/final_layer_norm/weight", "language_encoder/final_norm/scale", _same),
    ]


def _rules() -> list[Rule]:
    ot = "octo_transformer/"
    tok = ot + r"observation_tokenizers_(\w+?)/SmallStem16_0/"
    stack = ot + "BlockTransformer_0/Transformer_0/"
    blk = stack + r"encoderblock_(\d+)/"
    mha = blk + r"MultiHeadDotProductAttention_0/"
    to = r"transformer/transformer/blocks/\1/"
    dm = "heads_action/diffusion_model/"
    rn = dm + "reverse_network/"
    mp = "heads_action/map_head/"
    net = "head/network/"
    kb = r"(kernel|bias)"
    return [
        (tok + r"StdConv_(\d+)/" + kb, r"image_tokenizers/\1/encoder/convs/\2/\3", _same),
        (tok + r"GroupNorm_(\d+)/(scale|bias)", r"image_tokenizers/\1/encoder/norms/\2/\3", _same),
        (tok + r"embedding/" + kb, r"image_tokenizers/\1/encoder/patch/\2", _same),
        (ot + r"obs_proprio_projection/" + kb, r"proprio_projection/\1", _same),
        (ot + r"obs_proprio_pos_embedding", "proprio_position", _drop_leading_one),
        (ot + r"obs_(\w+?)_projection/" + kb, r"image_projections/\1/\2", _same),
        (ot + r"obs_(\w+?)_pos_embedding", r"image_positions/\1", _drop_leading_one),
        (ot + r"task_language_projection/" + kb, r"language_projection/\1", _same),
        (ot + r"task_language_pos_embedding", "language_position", _drop_leading_one),
        (ot + r"readout_action_pos_embedding", "readout_position", _drop_leading_one),
        *_t5_rules(),
        (blk + r"LayerNorm_0/(scale|bias)", to + r"ln_attention/\2", _same),
        (blk + r"LayerNorm_1/(scale|bias)", to + r"ln_mlp/\2", _same),
        (mha + r"(query|key|value)/" + kb, to + r"attention/\2/\3", _heads_in),
        (mha + r"out/kernel", to + "attention/out/kernel", _heads_out),
        (mha + r"out/bias", to + "attention/out/bias", _same),
        (blk + r"MlpBlock_0/Dense_0/" + kb, to + r"mlp/fc1/\2", _same),
        (blk + r"MlpBlock_0/Dense_1/" + kb, to + r"mlp/fc2/\2", _same),
        (stack + r"encoder_norm/(scale|bias)", r"transformer/transformer/ln_final/\1", _same),
        (dm + "time_preprocess/kernel", net + "time_embedding/fourier/kernel", _fourier),
        (dm + "cond_encoder/Dense_0/" + kb, net + r"time_embedding/hidden/\1", _same),
        (dm + "cond_encoder/Dense_1/" + kb, net + r"time_embedding/out/\1", _same),
        (rn + "Dense_0/" + kb, net + r"proj_in/\1", _same),
        (rn + "Dense_1/" + kb, net + r"proj_out/\1", _same),
        (rn + r"MLPResNetBlock_(\d+)/LayerNorm_0/(scale|bias)", net + r"blocks/\1/norm/\2", _same),
        (rn + r"MLPResNetBlock_(\d+)/Dense_0/" + kb, net + r"blocks/\1/up/\2", _same),
        (rn + r"MLPResNetBlock_(\d+)/Dense_1/" + kb, net + r"blocks/\1/down/\2", _same),
        # An L1 / MSE head (Octo's examples/02): the output layer and its attention pooling.
        ("heads_action/mean_proj/" + kb, r"head/proj/\1", _same),
        (mp + "probe", "head/map_head/probe", _same),
        (mp + r"MultiHeadDotProductAttention_0/(query|key|value)/" + kb,
         r"head/map_head/attention/\1/\2", _heads_in),
        (mp + "MultiHeadDotProductAttention_0/out/kernel", "head/map_head/attention/out/kernel",
         _heads_out),
        (mp + "MultiHeadDotProductAttention_0/out/bias", "head/map_head/attention/out/bias", _same),
        (mp + r"LayerNorm_0/(scale|bias)", r"head/map_head/norm/\1", _same),
        (mp + r"MlpBlock_0/Dense_0/" + kb, r"head/map_head/mlp/fc1/\1", _same),
        (mp + r"MlpBlock_0/Dense_1/" + kb, r"head/map_head/mlp/fc2/\1", _same),
    ]  # fmt: skip


RULES: tuple[tuple[re.Pattern, str, Callable], ...] = tuple(
    (re.compile(pattern), target, fn) for pattern, target, fn in _rules()
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested mapping (list/int keys become their str)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def target_path(octo_path: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
    """The octo_like path and reshape for one Octo path; None when no rule matches."""
    for pattern, target, fn in RULES:
        match = pattern.fullmatch(octo_path)
        if match:
            return match.expand(target), fn
    return None


def map_parameters(
    octo_params: Mapping[str, Any], target_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """{octo_like path: float32 array} for every path of `target_shapes`, from Octo's tree.

    Raises ValueError listing every Octo path no rule maps, every target filled twice or left
    empty, and every shape that differs after the reshape.
    """
    mapped: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    unmapped, twice, shapes, wrong_shape = [], [], [], set()
    for octo_path, value in sorted(flatten(octo_params).items()):
        found = target_path(octo_path)
        if found is None or found[0] not in target_shapes:
            unmapped.append(octo_path if found is None else f"{octo_path} -> {found[0]}")
            continue
        path, fn = found
        if path in mapped:
            twice.append(f"{path} <- {sources[path]} and {octo_path}")
            continue
        array = np.asarray(fn(np.asarray(value)), np.float32)
        if tuple(array.shape) != tuple(target_shapes[path]):
            shapes.append(f"{octo_path} {array.shape} -> {path} {tuple(target_shapes[path])}")
            wrong_shape.add(path)
            continue
        mapped[path], sources[path] = array, octo_path
    missing = sorted(set(target_shapes) - set(mapped) - wrong_shape)
    problems = [
        (f"{len(unmapped)} Octo parameter(s) map to nothing", unmapped),
        (f"{len(twice)} octo_like parameter(s) filled twice", twice),
        (f"{len(shapes)} shape mismatch(es)", shapes),
        (f"{len(missing)} octo_like parameter(s) not filled", missing),
    ]
    problems = [(title, items) for title, items in problems if items]
    if problems:
        lines = [f"{title}: {', '.join(items[:20])}" + (" ..." if len(items) > 20 else "")
                 for title, items in problems]  # fmt: skip
        raise ValueError("Octo parameters do not match the model:\n  " + "\n  ".join(lines))
    return mapped

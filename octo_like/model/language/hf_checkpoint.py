"""Reading and writing Hugging Face-format T5 checkpoint directories (no hub access).

A directory holds ``config.json``, the weights as ``model.safetensors`` (or shards
``model-0000i-of-0000n.safetensors`` listed in ``model.safetensors.index.json``) and the
sentencepiece model ``spiece.model``. Only encoder weights are read; decoder and ``lm_head``
weights are ignored. Torch ``Linear`` weights are stored ``[out, in]`` and transposed into NNX
kernels ``[in, out]``; embedding tables keep their layout.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from octo_like import storage
from octo_like.model.language.t5 import T5Encoder, T5EncoderConfig
from octo_like.model.language.tokenizer import SPIECE_FILENAME, TextTokenizer

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.safetensors"
INDEX_FILENAME = "model.safetensors.index.json"
EMBEDDING_NAME = "shared.weight"
# Some exports store the (tied) embedding only under the encoder's own name.
EMBEDDING_ALIASES = ("encoder.embed_tokens.weight",)


def hf_parameter_shapes(config: T5EncoderConfig) -> dict[str, tuple[int, ...]]:
    """HF encoder parameter names -> shapes in HF layout (torch ``Linear``: ``[out, in]``)."""
    d, inner, ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
    shapes = {EMBEDDING_NAME: (config.vocab_size, d)}
    for i in range(config.num_layers):
        attention = f"encoder.block.{i}.layer.0.SelfAttention"
        shapes[f"{attention}.q.weight"] = (inner, d)
        shapes[f"{attention}.k.weight"] = (inner, d)
        shapes[f"{attention}.v.weight"] = (inner, d)
        shapes[f"{attention}.o.weight"] = (d, inner)
        if i == 0:
            buckets = config.relative_attention_num_buckets
            shapes[f"{attention}.relative_attention_bias.weight"] = (buckets, config.num_heads)
        shapes[f"encoder.block.{i}.layer.0.layer_norm.weight"] = (d,)
        ffn = f"encoder.block.{i}.layer.1.DenseReluDense"
        if config.feed_forward_proj == "gated-gelu":
            shapes[f"{ffn}.wi_0.weight"] = (ff, d)
            shapes[f"{ffn}.wi_1.weight"] = (ff, d)
        else:
            shapes[f"{ffn}.wi.weight"] = (ff, d)
        shapes[f"{ffn}.wo.weight"] = (d, ff)
        shapes[f"encoder.block.{i}.layer.1.layer_norm.weight"] = (d,)
    shapes["encoder.final_layer_norm.weight"] = (d,)
    return shapes


def _encoder_variables(encoder: T5Encoder) -> dict[str, tuple[nnx.Variable, bool]]:
    """HF name -> (the NNX variable holding it, whether the HF tensor is a transposed kernel)."""
    variables: dict[str, tuple[nnx.Variable, bool]] = {
        EMBEDDING_NAME: (encoder.token_embedding.embedding, False),
    }
    for i, layer in enumerate(encoder.layers):
        attention = f"encoder.block.{i}.layer.0.SelfAttention"
        for short, dense in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
            variables[f"{attention}.{short}.weight"] = (
                getattr(layer.attention, dense).kernel,
                True,
            )
        if i == 0:
            variables[f"{attention}.relative_attention_bias.weight"] = (
                encoder.relative_attention_bias.embedding,
                False,
            )
        variables[f"encoder.block.{i}.layer.0.layer_norm.weight"] = (
            layer.attention_norm.scale,
            False,
        )
        ffn = f"encoder.block.{i}.layer.1.DenseReluDense"
        names = ("wi_0", "wi_1", "wo") if layer.feed_forward.gated else ("wi", "wo")
        for name in names:
            variables[f"{ffn}.{name}.weight"] = (getattr(layer.feed_forward, name).kernel, True)
        variables[f"encoder.block.{i}.layer.1.layer_norm.weight"] = (
            layer.feed_forward_norm.scale,
            False,
        )
    variables["encoder.final_layer_norm.weight"] = (encoder.final_norm.scale, False)
    return variables


def _weight_files(checkpoint_dir: str) -> dict[str, str]:
    """Tensor name -> safetensors file path, from the index (sharded) or the single file."""
    index_path = storage.join(checkpoint_dir, INDEX_FILENAME)
    single_path = storage.join(checkpoint_dir, WEIGHTS_FILENAME)
    if storage.isfile(index_path):
        weight_map = json.loads(storage.read_text(index_path)).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_path}: missing 'weight_map' object")
        files = {}
        for name, filename in weight_map.items():
            path = storage.join(checkpoint_dir, filename)
            if not storage.isfile(path):
                raise FileNotFoundError(f"{index_path}: shard {filename!r} (for {name!r}) missing")
            files[name] = path
        return files
    if storage.isfile(single_path):
        with safetensors.safe_open(storage.local_file(single_path), framework="numpy") as f:
            return dict.fromkeys(f.keys(), single_path)
    hint = ""
    if storage.isfile(storage.join(checkpoint_dir, "pytorch_model.bin")):
        hint = " (found pytorch_model.bin: convert it to safetensors first)"
    raise FileNotFoundError(f"{checkpoint_dir}: no {WEIGHTS_FILENAME} or {INDEX_FILENAME}{hint}")


def read_encoder_tensors(checkpoint_dir: str, config: T5EncoderConfig) -> dict[str, np.ndarray]:
    """Reads exactly the encoder tensors (HF names and layout), checking names and shapes."""
    checkpoint_dir = storage.absolute(checkpoint_dir)
    files = _weight_files(checkpoint_dir)
    expected = hf_parameter_shapes(config)
    unexpected = sorted(
        name
        for name in files
        if name.startswith("encoder.") and name not in expected and name not in EMBEDDING_ALIASES
    )
    if unexpected:
        raise ValueError(
            f"{checkpoint_dir}: encoder weights not in a {config.num_layers}-layer "
            f"{config.feed_forward_proj} T5 encoder (does config.json match?): {unexpected[:8]}"
        )
    sources = dict.fromkeys(expected)
    if EMBEDDING_NAME not in files:
        sources[EMBEDDING_NAME] = next((a for a in EMBEDDING_ALIASES if a in files), None)
    tensors = {}
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name in expected:
        source = sources[name] or name
        if source not in files:
            raise KeyError(
                f"{checkpoint_dir}: missing encoder weight {name!r} "
                f"(expected shape {list(expected[name])})"
            )
        by_file.setdefault(files[source], []).append((name, source))
    for path, names in by_file.items():
        with safetensors.safe_open(storage.local_file(path), framework="numpy") as f:
            for name, source in names:
                tensor = f.get_tensor(source)
                if tuple(tensor.shape) != expected[name]:
                    raise ValueError(
                        f"{path}: encoder weight {source!r} has shape {list(tensor.shape)}, "
                        f"expected {list(expected[name])}"
                    )
                tensors[name] = tensor
    return tensors


def load_t5_encoder(
    checkpoint_dir: str,
    *,
    rngs: nnx.Rngs | None = None,
    dtype: Any = jnp.float32,
    max_length: int = 16,
) -> tuple[T5Encoder, TextTokenizer]:
    """Builds a ``T5Encoder`` with the directory's weights, plus its tokenizer.

    The encoder is built abstractly (shapes only) and every parameter set from the file: a
    random initialization that is overwritten at once would cost seconds per start-up for
    T5-base on CPU. ``rngs`` is kept for callers that pass one; the encoder holds no random
    state (dropout draws from the ``rngs`` its call is given). Weights are cast to float32.
    """
    checkpoint_dir = storage.absolute(checkpoint_dir)
    config = T5EncoderConfig.from_json(storage.join(checkpoint_dir, CONFIG_FILENAME))
    tokenizer = TextTokenizer.from_directory(checkpoint_dir, max_length=max_length)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"{checkpoint_dir}: {SPIECE_FILENAME} has {tokenizer.vocab_size} pieces but the "
            f"model's vocab_size is {config.vocab_size}"
        )
    tensors = read_encoder_tensors(checkpoint_dir, config)
    encoder = nnx.eval_shape(
        lambda r: T5Encoder(config, rngs=r, dtype=dtype), rngs if rngs is not None else nnx.Rngs(0)
    )
    for name, (variable, transposed) in _encoder_variables(encoder).items():
        value = tensors[name].T if transposed else tensors[name]
        variable.value = jnp.asarray(value, dtype=jnp.float32)
    unset = [
        "/".join(map(str, path))
        for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(encoder))
        if isinstance(leaf, jax.ShapeDtypeStruct)
    ]
    if unset:  # a variable the file does not fill would stay shapes only
        raise ValueError(f"{checkpoint_dir}: no weights read for encoder variables {unset}")
    return encoder, tokenizer


def save_t5_encoder(
    encoder: T5Encoder,
    tokenizer_model_path: str | None,
    checkpoint_dir: str,
    *,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> None:
    """Writes the encoder in the HF layout ``load_t5_encoder`` (and transformers) reads.

    ``max_shard_bytes`` splits the weights into shards plus an index, as HF does for large
    models. ``tokenizer_model_path`` (a ``spiece.model``) is copied in when given.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    config_path = os.path.join(checkpoint_dir, CONFIG_FILENAME)
    os.makedirs(checkpoint_dir, exist_ok=True)
    existing = [
        name
        for name in os.listdir(checkpoint_dir)
        if name == CONFIG_FILENAME or (name.startswith("model") and ".safetensors" in name)
    ]
    if existing and not overwrite:
        raise FileExistsError(
            f"{checkpoint_dir} already holds {sorted(existing)}; pass overwrite=True to replace"
        )
    for name in existing:  # stale shards or index would shadow the new weights
        os.remove(os.path.join(checkpoint_dir, name))
    tensors = {
        name: np.ascontiguousarray(np.asarray(variable.value, np.float32).T)
        if transposed
        else np.asarray(variable.value, np.float32)
        for name, (variable, transposed) in _encoder_variables(encoder).items()
    }
    with open(config_path, "w") as f:
        json.dump(encoder.config.to_hf_dict(), f, indent=2)
    write_safetensors(tensors, checkpoint_dir, max_shard_bytes=max_shard_bytes)
    if tokenizer_model_path is not None:
        target = os.path.join(checkpoint_dir, SPIECE_FILENAME)
        if os.path.abspath(tokenizer_model_path) != os.path.abspath(target):
            shutil.copyfile(tokenizer_model_path, target)


def write_safetensors(
    tensors: dict[str, np.ndarray], checkpoint_dir: str, *, max_shard_bytes: int | None = None
) -> None:
    """Writes ``model.safetensors``, or HF-named shards and their index when sharding."""
    metadata = {"format": "pt"}  # what transformers expects in safetensors headers
    if max_shard_bytes is None:
        safetensors.numpy.save_file(
            tensors, os.path.join(checkpoint_dir, WEIGHTS_FILENAME), metadata=metadata
        )
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        safetensors.numpy.save_file(
            shard, os.path.join(checkpoint_dir, filename), metadata=metadata
        )
        weight_map.update(dict.fromkeys(shard, filename))
    index = {
        "metadata": {"total_size": int(sum(t.nbytes for t in tensors.values()))},
        "weight_map": weight_map,
    }
    with open(os.path.join(checkpoint_dir, INDEX_FILENAME), "w") as f:
        json.dump(index, f, indent=2)

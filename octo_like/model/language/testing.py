"""Builds tiny T5 checkpoint directories (random weights + a small sentencepiece model).

They have the exact Hugging Face layout of a real T5 checkpoint, so tests and debug configs
exercise the same loading path as ``t5-base`` without any download. Weights are drawn with
numpy from T5's initialization scales, independently of the NNX module code.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

import numpy as np
import sentencepiece

from octo_like.model.language.hf_checkpoint import (
    CONFIG_FILENAME,
    INDEX_FILENAME,
    hf_parameter_shapes,
    write_safetensors,
)
from octo_like.model.language.t5 import T5EncoderConfig
from octo_like.model.language.tokenizer import SPIECE_FILENAME

DEFAULT_INSTRUCTIONS = (
    "pick up the red block",
    "put the spoon in the pot",
    "open the top drawer",
    "close the microwave door",
    "move the green cup to the left",
    "place the carrot on the plate",
    "stack the blue block on the yellow block",
    "wipe the table with the towel",
    "turn on the faucet",
    "push the button",
    "put the banana in the bowl",
    "take the lid off the pan",
    "fold the cloth in half",
    "pour water into the glass",
    "slide the can to the right",
    "flip the pot upright",
    "put the eggplant in the sink",
    "sweep the beans into the dustpan",
    "knock over the bottle",
    "pick up the marker and put it in the mug",
)


def train_sentencepiece(instructions: Sequence[str], vocab_size: int, path: str) -> int:
    """Trains a unigram model with T5's special ids; returns its (possibly smaller) size."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(instructions)),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a short corpus may not support vocab_size pieces
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return sentencepiece.SentencePieceProcessor(model_file=path).get_piece_size()


def random_hf_t5_weights(config: T5EncoderConfig, seed: int) -> dict[str, np.ndarray]:
    """Encoder weights (HF names, float32) at T5's init scales, plus a few decoder tensors.

    Norm scales are perturbed around 1 so a mis-mapped norm changes outputs. The decoder tensors
    mimic a full ``T5ForConditionalGeneration`` file and must be ignored by the loader.
    """
    rng = np.random.default_rng(seed)
    d, dkv = config.d_model, config.d_kv
    tensors = {}
    for name, shape in hf_parameter_shapes(config).items():
        if name.endswith("layer_norm.weight"):
            tensor = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name == "shared.weight":
            tensor = rng.standard_normal(shape)
        elif name.endswith(".q.weight"):
            tensor = rng.standard_normal(shape) * (d * dkv) ** -0.5
        else:  # fan-in scaling: torch Linear weights are [out, in]
            fan_in = shape[-1] if len(shape) == 2 and "relative" not in name else d
            tensor = rng.standard_normal(shape) * fan_in**-0.5
        tensors[name] = tensor.astype(np.float32)
    tensors["decoder.final_layer_norm.weight"] = np.ones((d,), np.float32)
    tensors["decoder.block.0.layer.0.SelfAttention.q.weight"] = rng.standard_normal(
        (config.num_heads * dkv, d)
    ).astype(np.float32)
    tensors["lm_head.weight"] = rng.standard_normal((config.vocab_size, d)).astype(np.float32)
    return tensors


def write_tiny_t5_checkpoint(
    directory: str,
    *,
    instructions: Sequence[str] | None = None,
    vocab_size: int = 128,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    d_kv: int = 8,
    d_ff: int = 64,
    feed_forward_proj: str = "gated-gelu",
    seed: int = 0,
) -> str:
    """Writes config.json, model.safetensors and spiece.model into ``directory``; returns it.

    ``vocab_size`` is the model's embedding size; the sentencepiece model may have fewer pieces
    (as T5's 32128 embeddings cover a 32000-piece vocabulary).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    pieces = train_sentencepiece(
        instructions or DEFAULT_INSTRUCTIONS, vocab_size, os.path.join(directory, SPIECE_FILENAME)
    )
    if pieces > vocab_size:
        raise ValueError(f"sentencepiece produced {pieces} pieces > vocab_size {vocab_size}")
    config = T5EncoderConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj=feed_forward_proj,
    )
    with open(os.path.join(directory, CONFIG_FILENAME), "w") as f:
        json.dump(config.to_hf_dict(architectures=("T5ForConditionalGeneration",)), f, indent=2)
    if os.path.exists(os.path.join(directory, INDEX_FILENAME)):  # would shadow the new file
        os.remove(os.path.join(directory, INDEX_FILENAME))
    write_safetensors(random_hf_t5_weights(config, seed), directory)
    return directory

"""Test helpers: a model with small random weights drawn on the host.

`OctoModel.from_config` runs each of ~100 initializers as its own compiled computation (10-20 s
on a shared 2-core machine); tests of inference, serving or notebooks need a valid model and
checkpoint, not a principled initialization.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from octo_like.model.config import ModelConfig
from octo_like.model.input_spec import spec_from_batch
from octo_like.model.language import TextTokenizer
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.model.octo_model import OctoModel
from octo_like.model.octo_module import OctoModule


def host_initialized_model(
    config: ModelConfig,
    example_batch: Mapping[str, Any],
    dataset_statistics: dict[str, dict],
    *,
    seed: int = 0,
    scale: float = 0.05,
) -> OctoModel:
    """An `OctoModel` for `example_batch`'s layout with N(0, scale^2) weights (norm scales 1).

    The config's language encoder must be ``small`` or ``t5`` with a tokenizer directory.
    """
    tokenizer = TextTokenizer.from_directory(
        config.language.checkpoint_dir, config.language.max_length
    )
    batch = dict(example_batch)
    batch["task"] = tokenize_tasks(batch["task"], tokenizer)
    spec = spec_from_batch(batch)
    abstract = nnx.eval_shape(
        lambda: OctoModule(config, spec, tokenizer.vocab_size, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if str(path[-1]).endswith("'scale']"):
            return np.ones(leaf.shape, leaf.dtype)
        return (scale * rng.normal(size=leaf.shape)).astype(leaf.dtype)

    params = nnx.state(abstract, nnx.Param).to_pure_dict()
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, params))
    return OctoModel(nnx.merge(graphdef, state), config, spec, dataset_statistics, tokenizer)

"""Time per fine-tuning step, per transformer preset and fine-tuning mode.

The logic of ``scripts/benchmark_finetune.py`` (its docstring has the command), here so tests
import it. A randomly initialized "pretrained" model is saved, then fine-tuned through the same
pieces `finetune.py` uses: the `PretrainedInitializer` hook (weights reused, the mode's frozen
patterns), `make_optimizer` and the loop's `make_steps` train step, jitted with the state
donated. Timing excludes compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable

import jax
import numpy as np

from octo_like.data.synthetic import DEFAULT_INSTRUCTIONS
from octo_like.model.config import LoraConfig, ModelConfig
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.model.octo_model import OctoModel
from octo_like.training.benchmarks.model_benchmark import jitted_train_step, octo_shaped_batch
from octo_like.training.finetuning.finetune import MODES, FinetuneSource, PretrainedInitializer
from octo_like.training.optim.optimizer import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class FinetuneBenchmarkOptions:
    """The script's flags. `frozen_gradients`: compute frozen params' gradients too (the step
    without stop_gradient, to compare)."""

    sizes: tuple[str, ...] = ("tiny", "small")
    modes: tuple[str, ...] = ("full", "head_only", "head_mlp_only", "lora")
    batch: int = 8
    steps: int = 3
    primary_size: int = 256
    wrist_size: int = 128
    action_dim: int = 7
    frozen_gradients: bool = False

    def __post_init__(self):
        # Checked before minutes of building and saving pretrained models, not after.
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown:
            raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {list(MODES)}")


def example_batch(batch: int, primary: int, wrist: int, action_dim: int, rng) -> dict:
    """Octo's layout, window 2, chunk 4: the shapes of configs/pretrain.py's models."""
    return octo_shaped_batch(
        rng,
        batch=batch,
        window=2,
        action_horizon=4,
        action_dim=action_dim,
        primary=primary,
        wrist=wrist,
        instruction=b"pick up the red block",
    )


def time_mode(
    size: str,
    mode: str,
    pretrained_dir: str,
    config: ModelConfig,
    batch: dict,
    args: FinetuneBenchmarkOptions,
) -> dict:
    """One (size, mode) row: fine-tune the saved `pretrained_dir` on `batch` and time steps."""
    source = FinetuneSource(pretrained_dir, 0, mode, "language", save_frozen_params=True)
    model_config = dataclasses.replace(
        config,
        action_dim=args.action_dim,
        lora=LoraConfig() if mode == "lora" else None,
    )
    initializer = PretrainedInitializer(source, model_config, echo=lambda text: None)
    initial = initializer(batch, jax.random.key(0), {})
    model = initial.model
    optimizer_config = OptimizerConfig(warmup_steps=10, frozen=initial.frozen)
    step, state, counts = jitted_train_step(
        model.module,
        optimizer_config,
        None if args.frozen_gradients else optimizer_config.frozen,
    )
    # Committed to one device like the step's outputs, so the second call does not recompile.
    state = jax.device_put(state, jax.devices()[0])
    task = tokenize_tasks(batch["task"], model.text_tokenizer)
    task.pop("language_instruction")  # strings stay on the host, as in the loop
    device_batch = jax.device_put({**batch, "task": task}, jax.devices()[0])
    start = time.perf_counter()
    state, metrics = step(state, device_batch)
    jax.block_until_ready(metrics)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, device_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return {
        "size": size,
        "mode": mode,
        "batch": args.batch,
        "trainable_parameters": counts["trainable_parameters"],
        "parameters": counts["parameters"],
        "first_step_s": round(first_s, 2),
        "step_s": round(float(np.median(times)), 3),
        "loss": float(metrics["loss"]),
        "device": jax.devices()[0].platform,
    }


def run(
    args: FinetuneBenchmarkOptions,
    pretrained_config: Callable[[str, str], ModelConfig],
    echo: Callable[[str], None] | None = None,
) -> list[dict]:
    """Every (size, mode) row: one line each, then the JSON list; returns the rows.

    `pretrained_config(size, tokenizer_dir)`: the pretrained model's config for a size (the
    script reads configs/pretrain.py, which the package does not import). `echo` (default:
    print, flushed so each row shows as it is timed) receives every printed line.
    """
    echo = echo or functools.partial(print, flush=True)
    root = tempfile.mkdtemp(prefix="benchmark_finetune_")
    tokenizer_dir = write_tiny_t5_checkpoint(
        os.path.join(root, "tokenizer"), instructions=DEFAULT_INSTRUCTIONS
    )
    rng = np.random.default_rng(0)
    results = []
    for size in args.sizes:
        config = pretrained_config(size, tokenizer_dir)
        pretrain_batch = example_batch(args.batch, args.primary_size, args.wrist_size, 7, rng)
        pretrained = OctoModel.from_config(config, pretrain_batch, jax.random.key(0))
        pretrained_dir = os.path.join(root, size)
        pretrained.save_pretrained(0, pretrained_dir)
        del pretrained
        batch = example_batch(args.batch, args.primary_size, args.wrist_size, args.action_dim, rng)
        for mode in args.modes:
            result = time_mode(size, mode, pretrained_dir, config, batch, args)
            echo(
                f"{size:>6} {mode:<14} {result['step_s']:7.3f} s/step (batch {args.batch}), "
                f"first step {result['first_step_s']:.1f} s, trainable "
                f"{result['trainable_parameters']:,} / {result['parameters']:,}"
            )
            results.append(result)
    echo(json.dumps(results))
    return results

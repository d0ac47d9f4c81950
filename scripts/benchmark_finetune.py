"""Time per fine-tuning step, per transformer preset and fine-tuning mode.

    python scripts/benchmark_finetune.py --sizes tiny,small --modes full,head_only,lora --batch 8

A randomly initialized "pretrained" model in the configuration of configs/pretrain.py:<size>
(256x256 primary + 128x128 wrist with goal fusion, window 2, chunk 4, small language encoder,
diffusion head) is saved, then fine-tuned through the same pieces `finetune.py` uses: the
`PretrainedInitializer` hook (weights reused, mode's frozen patterns), `make_optimizer` and the
loop's `make_steps` train step, jitted with the state donated. Timing excludes compilation.
Prints one line per (size, mode) and, last, a JSON list.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--modes", default="full,head_only,head_mlp_only,lora")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument("--primary_size", type=int, default=256)
    parser.add_argument("--wrist_size", type=int, default=128)
    parser.add_argument("--action_dim", type=int, default=7, help="the fine-tuning data's")
    parser.add_argument(
        "--frozen_gradients",
        action="store_true",
        help="compute frozen params' gradients too (the step without stop_gradient, to compare)",
    )
    return parser.parse_args(argv)


def example_batch(batch: int, primary: int, wrist: int, action_dim: int, rng) -> dict:
    import numpy as np

    w, h = 2, 4
    ones = lambda *shape: np.ones(shape, bool)
    image = lambda *shape: rng.integers(0, 255, shape, dtype=np.uint8)
    return {
        "observation": {
            "image_primary": image(batch, w, primary, primary, 3),
            "image_wrist": image(batch, w, wrist, wrist, 3),
            "timestep_pad_mask": ones(batch, w),
            "pad_mask_dict": {"image_primary": ones(batch, w), "image_wrist": ones(batch, w)},
        },
        "task": {
            "language_instruction": np.array([b"pick up the red block"] * batch, dtype=object),
            "image_primary": image(batch, primary, primary, 3),
            "image_wrist": image(batch, wrist, wrist, 3),
            "pad_mask_dict": {
                "language_instruction": ones(batch),
                "image_primary": ones(batch),
                "image_wrist": ones(batch),
            },
        },
        "action": rng.normal(size=(batch, w, h, action_dim)).astype(np.float32),
        "action_pad_mask": ones(batch, w, h, action_dim),
    }


def pretrained_config(size: str, tokenizer_dir: str):
    """configs/pretrain.py:<size>'s model section as a ModelConfig."""
    sys.path.insert(0, REPO)
    from configs import pretrain
    from octo_like.config.typed import build, to_plain
    from octo_like.model.config import ModelConfig

    model = to_plain(pretrain.get_config(size).model)
    model["language"]["checkpoint_dir"] = tokenizer_dir
    return build(ModelConfig, model, "model")


def time_mode(size: str, mode: str, pretrained_dir: str, config, batch: dict, args) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from octo_like.model.config import LoraConfig
    from octo_like.model.octo_model import tokenize_tasks
    from octo_like.training import masks
    from octo_like.training.finetune import FinetuneSource, PretrainedInitializer
    from octo_like.training.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
    from octo_like.training.step import TrainState, make_steps

    source = FinetuneSource(pretrained_dir, 0, mode, "language", save_frozen_params=True)
    model_config = dataclasses.replace(
        config,
        action_dim=args.action_dim,
        lora=LoraConfig() if mode == "lora" else None,
    )
    initializer = PretrainedInitializer(source, model_config, echo=lambda text: None)
    initial = initializer(batch, jax.random.key(0), {})
    model = initial.model
    graphdef, params, rest = nnx.split(model.module, nnx.Param, ...)
    optimizer_config = OptimizerConfig(warmup_steps=10, frozen=initial.frozen)
    optimizer, counts = make_optimizer(optimizer_config, params, 1000)
    state = TrainState(jax.numpy.zeros((), jax.numpy.int32), params, optimizer.init(params))
    train_step, _ = make_steps(
        graphdef,
        rest,
        optimizer,
        loop_learning_rate(optimizer_config, 1000),
        jax.random.key(1),
        frozen=None
        if args.frozen_gradients
        else masks.regex_mask(params, optimizer_config.frozen, name="frozen"),
    )
    step = jax.jit(train_step, donate_argnums=0)
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


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import jax
    import numpy as np

    from octo_like.data.synthetic import DEFAULT_INSTRUCTIONS
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from octo_like.model.octo_model import OctoModel

    root = tempfile.mkdtemp(prefix="benchmark_finetune_")
    tokenizer_dir = write_tiny_t5_checkpoint(
        os.path.join(root, "tokenizer"), instructions=DEFAULT_INSTRUCTIONS
    )
    rng = np.random.default_rng(0)
    results = []
    for size in args.sizes.split(","):
        config = pretrained_config(size, tokenizer_dir)
        pretrain_batch = example_batch(args.batch, args.primary_size, args.wrist_size, 7, rng)
        pretrained = OctoModel.from_config(config, pretrain_batch, jax.random.key(0))
        pretrained_dir = os.path.join(root, size)
        pretrained.save_pretrained(0, pretrained_dir)
        del pretrained
        batch = example_batch(args.batch, args.primary_size, args.wrist_size, args.action_dim, rng)
        for mode in args.modes.split(","):
            result = time_mode(size, mode, pretrained_dir, config, batch, args)
            print(
                f"{size:>6} {mode:<14} {result['step_s']:7.3f} s/step (batch {args.batch}), "
                f"first step {result['first_step_s']:.1f} s, trainable "
                f"{result['trainable_parameters']:,} / {result['parameters']:,}",
                flush=True,
            )
            results.append(result)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()

"""Parameter counts, FLOPs, train-step time and inference latency of the policy network.

    python scripts/benchmark_model.py --size small --batch 8 [--window 2] [--dtype bf16]

Octo's configuration: 256x256 primary + 128x128 wrist camera, window 2, chunk 4, 7-dim actions,
20-step diffusion head, a frozen T5-base-sized language encoder (random weights, small
vocabulary: the embedding lookup costs nothing). Runs unchanged on CPU and GPU; prints, as its
last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=("dummy", "tiny", "small", "base"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--action_horizon", type=int, default=4)
    parser.add_argument("--primary_size", type=int, default=256)
    parser.add_argument("--wrist_size", type=int, default=128)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps")
    parser.add_argument("--infer_calls", type=int, default=5)
    parser.add_argument("--language", choices=("t5-base", "none"), default="t5-base")
    parser.add_argument("--remat", action="store_true", help="rematerialize transformer blocks")
    return parser.parse_args(argv)


def example_batch(args, rng):
    import numpy as np

    b, w, h = args.batch, args.window, args.action_horizon
    images = lambda size: rng.integers(0, 255, (b, w, size, size, 3), dtype=np.uint8)
    goal = lambda size: rng.integers(0, 255, (b, size, size, 3), dtype=np.uint8)
    ones = lambda *shape: np.ones(shape, bool)
    return {
        "observation": {
            "image_primary": images(args.primary_size),
            "image_wrist": images(args.wrist_size),
            "timestep_pad_mask": ones(b, w),
            "pad_mask_dict": {"image_primary": ones(b, w), "image_wrist": ones(b, w)},
        },
        "task": {
            "language_instruction": np.array([b"pick up the spoon"] * b, dtype=object),
            "image_primary": goal(args.primary_size),
            "image_wrist": goal(args.wrist_size),
            "pad_mask_dict": {
                "language_instruction": ones(b),
                "image_primary": ones(b),
                "image_wrist": ones(b),
            },
        },
        "action": rng.normal(size=(b, w, h, 7)).astype(np.float32),
        "action_pad_mask": ones(b, w, h, 7),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from octo_like.model.config import ImageTokenizerConfig, LanguageConfig, ModelConfig
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from octo_like.model.octo_model import OctoModel

    language = LanguageConfig(encoder="none")
    if args.language == "t5-base":
        t5_dir = write_tiny_t5_checkpoint(
            tempfile.mkdtemp(prefix="t5base_"),
            vocab_size=512,
            d_model=768,
            num_layers=12,
            num_heads=12,
            d_kv=64,
            d_ff=3072,
            feed_forward_proj="relu",
        )
        language = LanguageConfig(encoder="t5", checkpoint_dir=t5_dir)
    config = ModelConfig(
        transformer=args.size,
        image_tokenizers=(
            ImageTokenizerConfig("primary", goal_fusion=True),
            ImageTokenizerConfig("wrist", goal_fusion=True),
        ),
        language=language,
        window=args.window,
        action_horizon=args.action_horizon,
        dtype="bfloat16" if args.dtype == "bf16" else "float32",
        remat=args.remat,
    )
    batch = example_batch(args, np.random.default_rng(0))
    model = OctoModel.from_config(config, batch, jax.random.key(0))
    from octo_like.model.octo_model import tokenize_tasks

    if model.text_tokenizer is not None:
        batch["task"] = tokenize_tasks(batch["task"], model.text_tokenizer)
    batch["task"].pop("language_instruction")
    counts = parameter_counts(model)

    graphdef, params, rest = nnx.split(model.module, nnx.Param, ...)
    trainable = trainable_mask(model, params)
    optimizer = optax.masked(optax.adamw(1e-4), trainable)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, batch, rng):
        def loss_fn(params):
            module = nnx.merge(graphdef, params, rest)
            loss, _ = module.loss(batch, rng=rng, train=True)
            return loss

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    rng = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    memory = compiled.memory_analysis()
    temp_mb = getattr(memory, "temp_size_in_bytes", 0) / 2**20 if memory else 0.0
    params, opt_state, loss = compiled(params, opt_state, batch, rng)
    jax.block_until_ready(loss)
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, batch, jax.random.key(i))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    train_step_s = float(np.median(times))

    nnx.update(model.module, params)
    model._predict = None
    single = jax.tree.map(lambda x: x[:1], batch)
    tasks = {k: v for k, v in single["task"].items()}
    start = time.perf_counter()
    model.sample_actions(single["observation"], tasks, jax.random.key(0), {})
    first_call_s = time.perf_counter() - start
    latencies = []
    for i in range(args.infer_calls):
        start = time.perf_counter()
        model.sample_actions(single["observation"], tasks, jax.random.key(i), {})
        latencies.append(time.perf_counter() - start)
    result = {
        "size": args.size,
        "batch": args.batch,
        "window": args.window,
        "dtype": args.dtype,
        "params": counts,
        "flops_per_step": flops,
        "remat": args.remat,
        "compile_s": round(compile_s, 2),
        "train_step_temp_mb": round(temp_mb, 1),
        "train_step_s": round(train_step_s, 4),
        "samples_per_s": round(args.batch / train_step_s, 3),
        "infer_first_call_s": round(first_call_s, 2),
        "infer_latency_ms": round(1000 * float(np.median(latencies)), 2),
        "loss": float(loss),
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.devices()[0].platform,
    }
    print(json.dumps(result))
    return result


def trainable_mask(model, params):
    """False for the frozen language encoder's parameters."""
    import jax

    frozen = model.config.language.frozen and model.config.language.encoder == "t5"

    def is_trainable(path, _):
        return not (frozen and any(getattr(p, "key", None) == "language_encoder" for p in path))

    return jax.tree_util.tree_map_with_path(is_trainable, params)


def parameter_counts(model) -> dict[str, int]:
    import jax
    from flax import nnx

    params = nnx.state(model.module, nnx.Param)
    mask = trainable_mask(model, params)
    sizes = jax.tree.map(lambda p: p.size, params)
    trainable = sum(
        s for s, m in zip(jax.tree.leaves(sizes), jax.tree.leaves(mask), strict=True) if m
    )
    total = sum(jax.tree.leaves(sizes))
    return {"trainable": int(trainable), "frozen": int(total - trainable)}


if __name__ == "__main__":
    main()

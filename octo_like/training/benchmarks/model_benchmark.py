"""Train-step speed and model-FLOPs utilization (MFU) of the policy network on one device.

The logic of ``scripts/benchmark_model.py`` (its docstring has the command and what it prints),
here so tests import it. The step is the project's own (`training.step.make_steps` with the
AdamW optimizer of `training.optimizer`), jitted with a donated state as the loop does; MFU is
the analytic count of `octo_like.model.flops` over step time and the chip's peak.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from octo_like.model.attention import accelerator_platform, resolve_implementation
from octo_like.model.config import (
    OCTO_DIFFUSION_BEHAVIOURS,
    OCTO_MODEL_BEHAVIOURS,
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
)
from octo_like.model.flops import model_train_flops, peak_flops
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.model.octo_model import OctoModel
from octo_like.training.benchmarks import trace_summary
from octo_like.training.optim import masks
from octo_like.training.optim.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
from octo_like.training.run.step import TrainState, make_steps

FROZEN_LANGUAGE_ENCODER = "^language_encoder/"


@dataclasses.dataclass(frozen=True)
class ModelBenchmarkOptions:
    """What to build and how to time it; the script's flags, one field each."""

    size: str = "small"
    batch: int = 8
    window: int = 2
    action_horizon: int = 4
    primary_size: int = 256
    wrist_size: int = 128
    dtype: str = "fp32"  # fp32 | bf16
    attention: str = "auto"
    remat: str = "none"
    scan: bool = False
    steps: int = 10
    warmup: int = 2
    infer_calls: int = 5
    language: str = "t5-base"  # t5-base | none
    peak_tflops: float | None = None
    trace_dir: str | None = None
    trace_steps: int = 3
    matmul_ceiling: bool = False


def example_batch(args: ModelBenchmarkOptions, rng) -> dict:
    """The benchmarked batch: Octo's layout at the flags' sizes, 7-dim actions."""
    return octo_shaped_batch(
        rng,
        batch=args.batch,
        window=args.window,
        action_horizon=args.action_horizon,
        action_dim=7,
        primary=args.primary_size,
        wrist=args.wrist_size,
        instruction=b"pick up the spoon",
    )


def octo_shaped_batch(
    rng: np.random.Generator,
    *,
    batch: int,
    window: int,
    action_horizon: int,
    action_dim: int,
    primary: int,
    wrist: int,
    instruction: bytes,
) -> dict:
    """A host batch of Octo's layout: primary and wrist cameras with goal images of the same
    sizes, one language instruction, random actions; every pad mask True."""
    b, w, h = batch, window, action_horizon
    images = lambda size: rng.integers(0, 255, (b, w, size, size, 3), dtype=np.uint8)
    goal = lambda size: rng.integers(0, 255, (b, size, size, 3), dtype=np.uint8)
    ones = lambda *shape: np.ones(shape, bool)
    return {
        "observation": {
            "image_primary": images(primary),
            "image_wrist": images(wrist),
            "timestep_pad_mask": ones(b, w),
            "pad_mask_dict": {"image_primary": ones(b, w), "image_wrist": ones(b, w)},
        },
        "task": {
            "language_instruction": np.array([instruction] * b, dtype=object),
            "image_primary": goal(primary),
            "image_wrist": goal(wrist),
            "pad_mask_dict": {
                "language_instruction": ones(b),
                "image_primary": ones(b),
                "image_wrist": ones(b),
            },
        },
        "action": rng.normal(size=(b, w, h, action_dim)).astype(np.float32),
        "action_pad_mask": ones(b, w, h, action_dim),
    }


def model_config(args: ModelBenchmarkOptions, t5_dir: str | None):
    """The benchmarked ModelConfig: what the `small`/`base` presets compute (Octo-1.5's
    behaviours: the task tokens repeated in each timestep, 690 tokens per example at Octo's
    sizes; its diffusion head), at the flags' sizes, dtype and kernels; T5 language when `t5_dir`
    is given, else none."""
    language = LanguageConfig(encoder="none")
    if t5_dir is not None:
        language = LanguageConfig(encoder="t5", checkpoint_dir=t5_dir)
    return ModelConfig(
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
        scan_layers=args.scan,
        attention=args.attention,
        head=HeadConfig("diffusion", {"hidden_dim": 256, **OCTO_DIFFUSION_BEHAVIOURS}),
        **OCTO_MODEL_BEHAVIOURS,
    )


def t5_base_directory() -> str:
    """A T5-base-shaped HF directory with random weights (small vocabulary: lookups are free)."""
    return write_tiny_t5_checkpoint(
        tempfile.mkdtemp(prefix="t5base_"),
        vocab_size=512,
        d_model=768,
        num_layers=12,
        num_heads=12,
        d_kv=64,
        d_ff=3072,
        feed_forward_proj="relu",
    )


def jitted_train_step(module, optimizer_config: OptimizerConfig, stop_gradients: tuple | None):
    """The loop's train step jitted with the state donated, its first state, and
    `make_optimizer`'s parameter counts.

    `stop_gradients`: regexes of the parameters whose gradients the step does not compute
    (None: every gradient is computed, frozen ones then discarded by the optimizer).
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    optimizer, counts = make_optimizer(optimizer_config, params, 1000)
    train_step, _ = make_steps(
        graphdef,
        rest,
        optimizer,
        loop_learning_rate(optimizer_config, 1000),
        jax.random.key(1),
        frozen=None
        if stop_gradients is None
        else masks.regex_mask(params, stop_gradients, name="frozen"),
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    return jax.jit(train_step, donate_argnums=0), state, counts


def compiled_train_step(model, batch, frozen_language: bool):
    """(compiled step, state, compile seconds, xla flops) for the project's train step."""
    frozen = (FROZEN_LANGUAGE_ENCODER,) if frozen_language else ()
    opt_config = OptimizerConfig(learning_rate=1e-4, warmup_steps=10, frozen=frozen)
    step, state, _ = jitted_train_step(model.module, opt_config, frozen or None)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
    return compiled, state, compile_s, xla_flops


def run(args: ModelBenchmarkOptions) -> dict:
    """Build, compile and time the train step (and inference); print a summary and the JSON line.

    Returns the JSON line's object.
    """
    device = jax.devices()[0]
    t5_dir = t5_base_directory() if args.language == "t5-base" else None
    config = model_config(args, t5_dir)
    host_batch = example_batch(args, np.random.default_rng(0))
    model = OctoModel.from_config(config, host_batch, jax.random.key(0))
    if model.text_tokenizer is not None:
        host_batch["task"] = tokenize_tasks(host_batch["task"], model.text_tokenizer)
    host_batch["task"].pop("language_instruction")
    batch = jax.device_put(host_batch)
    counts = parameter_counts(model)
    flops = model_train_flops(model.module, model.input_spec)
    analytic = flops.total(args.batch)

    compiled, state, compile_s, xla_flops = compiled_train_step(
        model, batch, frozen_language=t5_dir is not None
    )
    for _ in range(args.warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics if args.warmup else state)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch)
    loss = float(jax.device_get(metrics["loss"]))
    step_s = (time.perf_counter() - start) / args.steps

    device_time = None
    if args.trace_dir:
        state, device_time = traced_steps(compiled, state, batch, args.trace_dir, args.trace_steps)

    ceiling = None
    if args.matmul_ceiling:
        preset = model.module.transformer.config
        ceiling = matmul_ceiling(
            args.batch * flops.tokens, preset.width, preset.mlp_dim, preset.compute_dtype
        )

    memory = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak_memory_gb = (memory or {}).get("peak_bytes_in_use", 0) / 2**30 or None
    peak = peak_flops(device.device_kind)
    peak_name, peak_value = peak if peak else (None, None)
    if args.peak_tflops:
        peak_name, peak_value = "--peak_tflops", args.peak_tflops * 1e12
    mfu = analytic / step_s / peak_value if peak_value else None

    infer_ms = first_call_s = None
    if args.infer_calls:
        model.update_params(state.params)
        single = jax.tree.map(lambda x: x[:1], host_batch)
        start = time.perf_counter()
        model.sample_actions(single["observation"], single["task"], rng=jax.random.key(0))
        first_call_s = time.perf_counter() - start
        latencies = []
        for i in range(args.infer_calls):
            start = time.perf_counter()
            model.sample_actions(single["observation"], single["task"], rng=jax.random.key(i))
            latencies.append(time.perf_counter() - start)
        infer_ms = round(1000 * float(np.median(latencies)), 2)

    result = {
        "size": args.size,
        "batch": args.batch,
        "dtype": args.dtype,
        "attention": args.attention,
        "attention_resolved": resolved_attention(model, args),
        "remat": args.remat,
        "scan": args.scan,
        "params": counts,
        "tokens_per_example": flops.tokens,
        "compile_s": round(compile_s, 2),
        "step_s": round(step_s, 5),
        "samples_per_s": round(args.batch / step_s, 2),
        "tokens_per_s": round(args.batch * flops.tokens / step_s, 1),
        "analytic_flops_per_step": analytic,
        "analytic_flops_breakdown": flops.as_dict(args.batch),
        "xla_flops_per_step": xla_flops,
        "xla_over_analytic": round(xla_flops / analytic, 4) if analytic else None,
        "achieved_tflops": round(analytic / step_s / 1e12, 2),
        "peak_tflops": round(peak_value / 1e12, 1) if peak_value else None,
        "peak_source": peak_name,
        "mfu": round(mfu, 4) if mfu is not None else None,
        "peak_memory_gb": round(peak_memory_gb, 2) if peak_memory_gb else None,
        "infer_first_call_s": round(first_call_s, 2) if first_call_s is not None else None,
        "infer_latency_ms": infer_ms,
        "device_ms_by_category": device_time,
        "matmul_ceiling": ceiling,
        "fraction_of_matmul_ceiling": (
            round(analytic / step_s / 1e12 / ceiling["tflops"], 4)
            if ceiling and ceiling["tflops"] > 0
            else None
        ),
        "loss": loss,
        "device": str(device.device_kind),
        "platform": device.platform,
        "jax": jax.__version__,
    }
    mfu_text = f"{100 * mfu:.1f}% of {peak_name}" if mfu is not None else "n/a (unknown peak)"
    if result["fraction_of_matmul_ceiling"] is not None:
        print(
            f"matmul ceiling (the transformer's GEMMs alone): {ceiling}; the step reaches "
            f"{100 * result['fraction_of_matmul_ceiling']:.1f}% of it"
        )
    print(
        f"{args.size} b{args.batch} {args.dtype} attention={result['attention_resolved']} "
        f"remat={args.remat} scan={args.scan}: {1000 * step_s:.1f} ms/step, "
        f"{result['samples_per_s']} samples/s, {result['achieved_tflops']} TFLOP/s, "
        f"MFU {mfu_text}, compile {compile_s:.1f} s, "
        f"XLA/analytic FLOPs {result['xla_over_analytic']}"
    )
    print(json.dumps(result))
    return result


def matmul_ceiling(rows: int, width: int, mlp: int, dtype, repeats: int = 20) -> dict:
    """The vendor library's speed on the transformer's own matrix products, run alone.

    Times [rows, k] @ [k, n] for each projection of a block (q, k, v and out: d x d; MLP: d x m
    and m x d) in `dtype`: `repeats` products dispatched back to back, median of 3 such runs.
    Returns per-shape TFLOP/s and their FLOP-weighted rate, ``tflops``: what a step made only
    of these products could reach, so ``achieved / tflops`` says how much of the gap to the
    chip's peak is the GEMMs' own.
    """
    shapes = {"d_x_d": (width, width), "d_x_mlp": (width, mlp), "mlp_x_d": (mlp, width)}
    count = {"d_x_d": 4, "d_x_mlp": 1, "mlp_x_d": 1}
    matmul = jax.jit(lambda a, b: a @ b)
    result, total_flops, total_s = {}, 0.0, 0.0
    for name, (k, n) in shapes.items():
        a = jax.random.normal(jax.random.key(0), (rows, k), dtype)
        b = jax.random.normal(jax.random.key(1), (k, n), dtype)
        jax.block_until_ready(matmul(a, b))
        times = []
        for _ in range(3):  # back to back, as in a step: no host round trip between products
            start = time.perf_counter()
            for _ in range(repeats):
                out = matmul(a, b)
            jax.block_until_ready(out)
            times.append((time.perf_counter() - start) / repeats)
        seconds = float(np.median(times))
        flops = 2.0 * rows * k * n
        result[name] = significant(flops / seconds / 1e12)
        total_flops += count[name] * flops
        total_s += count[name] * seconds
    result["tflops"] = significant(total_flops / total_s / 1e12)
    return result


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: a slow CPU's 0.04 TFLOP/s must not round to 0."""
    return float(f"{value:.{digits}g}")


def traced_steps(compiled, state, batch, trace_dir: str, steps: int):
    """Runs `steps` more steps under the profiler; prints and returns ms/step by category."""
    with jax.profiler.trace(trace_dir):
        for _ in range(steps):
            state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    ops = trace_summary.device_ops(trace_summary.latest_trace(trace_dir), steps)
    print(trace_summary.format_summary(ops, top=40))
    categories = trace_summary.by_category(ops)
    return state, {name: round(ms, 3) for name, ms in categories.items()}


def resolved_attention(model, args: ModelBenchmarkOptions) -> str:
    preset = model.module.transformer.config
    return resolve_implementation(
        args.attention,
        platform=accelerator_platform(),
        dtype=preset.compute_dtype,
        head_dim=preset.width // preset.num_heads,
        seq_len=model_train_flops(model.module, model.input_spec).tokens,
    )


def parameter_counts(model) -> dict[str, int]:
    params = nnx.state(model.module, nnx.Param)
    frozen = model.config.language.frozen and model.config.language.encoder == "t5"
    total = trainable = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        total += leaf.size
        in_language = any(getattr(p, "key", None) == "language_encoder" for p in path)
        trainable += 0 if (frozen and in_language) else leaf.size
    return {"trainable": int(trainable), "frozen": int(total - trainable)}

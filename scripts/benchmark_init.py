"""The cost of a model's initializers as one program (`octo_model.initialize`): tracing and
lowering, XLA's compile and the run, with its random operations batched (`draw_together`, what
`initialize` does) and made one by one, and whether both give the same bits:

    python scripts/benchmark_init.py --size base
    python scripts/benchmark_init.py --size small --size base

Octo's shapes as `benchmark_model.py` builds them (256² primary and 128² wrist cameras with goal
fusion), without a language encoder (a run loads T5's weights instead). Each program is compiled
once in this process after a warm-up compile, so the first one pays no one-time set-up.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

from octo_like.model import octo_model
from octo_like.model.random_draws import draw_together
from octo_like.training.benchmarks.model_benchmark import (
    ModelBenchmarkOptions,
    example_batch,
    model_config,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", action="append", choices=["tiny", "small", "base"],
        help="a preset to time; repeat the flag for several (default: base)",
    )  # fmt: skip
    return parser.parse_args(argv)


def time_program(fn, key) -> tuple[dict, list[np.ndarray]]:
    """Seconds to trace and lower, compile, run once and run again; the outputs."""
    started = time.perf_counter()
    lowered = jax.jit(fn).lower(key)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(key))
    ran_at = time.perf_counter()
    outputs = jax.block_until_ready(compiled(key))
    seconds = {
        "trace+lower": lowered_at - started,
        "compile": compiled_at - lowered_at,
        "first run": ran_at - compiled_at,
        "second run": time.perf_counter() - ran_at,
    }
    return seconds, [np.asarray(leaf) for leaf in jax.tree.leaves(outputs)]


def main() -> None:
    args = parse_args()
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind})")
    warm_up = lambda key: jax.random.normal(jax.random.fold_in(key, 1), (3,))  # noqa: E731
    jax.block_until_ready(jax.jit(warm_up)(jax.random.key(0)))
    for size in args.size or ["base"]:
        options = ModelBenchmarkOptions(size=size, batch=2)
        batch = example_batch(options, np.random.default_rng(0))
        make, _, _ = octo_model._module_factory(model_config(options, None), batch)

        def parameters(key, make=make):
            _, params, rest = nnx.split(make(key), nnx.Param, ...)
            return params, rest

        results = {}
        for name, fn in (("one by one", parameters), ("batched", draw_together(parameters))):
            seconds, results[name] = time_program(fn, jax.random.key(0))
            print(f"{size}, {name}: " + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()))
        same = all(
            np.array_equal(a, b)
            for a, b in zip(results["one by one"], results["batched"], strict=True)
        )
        print(f"{size}: {len(results['batched'])} arrays, bit-identical: {same}")


if __name__ == "__main__":
    main()

"""Train-step speed and model-FLOPs utilization (MFU) of the policy network on one device.

    python scripts/benchmark_model.py --size base --batch 128 --dtype bf16 [--attention auto]
        [--remat none|full|dots_saveable|dots_no_batch] [--scan] [--steps 10]
        [--trace_dir DIR] [--matmul_ceiling]

Octo's shapes: 256x256 primary + 128x128 wrist camera (goal images fused on the channels),
window 2, chunk 4, 7-dim actions, 20-step diffusion head, a frozen T5-base-sized language
encoder (random weights), and the model the `small`/`base` presets train (Octo-1.5's task
tokens repeated in each timestep: 690 tokens per example). The step is the project's own
(`training.step.make_steps` with the AdamW optimizer of `training.optimizer`), jitted with a
donated state as the loop does.

MFU = analytic training FLOPs per step (`octo_like.model.flops`, formula there) / step time /
the chip's dense bfloat16 peak (table in `octo_like.model.flops`; `--peak_tflops` for others).
The script also prints XLA's own count (`cost_analysis`) and their ratio: with an attention path
other than `lean` (whose `lax.map` body XLA counts once) they should agree within ~10%.

`--trace_dir` traces a few more steps and prints device time by category (matmul, attention,
convolution, elementwise, copy) and the top kernels (`octo_like.training.benchmarks.trace_summary`);
`--matmul_ceiling` times the transformer's own matrix shapes alone, the speed the vendor GEMMs
reach on this chip, which bounds what any step built from them can reach.

Steps are timed back to back (dispatch overlapping the device, as in training) after `--warmup`
steps. Prints a summary and, as its last line, one JSON object. The logic lives in
`octo_like.training.benchmarks.model_benchmark`, where tests import it.
"""

from __future__ import annotations

import argparse
import os

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
    parser.add_argument(
        "--attention", default="auto", choices=("auto", "lean", "einsum", "xla", "cudnn")
    )
    parser.add_argument(
        "--remat", default="none", choices=("none", "full", "dots_saveable", "dots_no_batch")
    )
    parser.add_argument("--scan", action="store_true", help="lax.scan over transformer layers")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--infer_calls", type=int, default=5, help="0 skips inference timing")
    parser.add_argument("--language", choices=("t5-base", "none"), default="t5-base")
    parser.add_argument("--peak_tflops", type=float, default=None, help="override the peak")
    parser.add_argument(
        "--trace_dir",
        default=None,
        help="also trace --trace_steps steps there and print where device time goes",
    )
    parser.add_argument("--trace_steps", type=int, default=3)
    parser.add_argument(
        "--matmul_ceiling",
        action="store_true",
        help="also time the transformer's own matrix products alone (the vendor GEMM speed)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Prints a summary and, last, the JSON line; returns its object."""
    # Imported here, after parsing: flags and --help need neither JAX nor TensorFlow.
    from octo_like.training.benchmarks.model_benchmark import ModelBenchmarkOptions, run

    return run(ModelBenchmarkOptions(**vars(parse_args(argv))))


if __name__ == "__main__":
    main()

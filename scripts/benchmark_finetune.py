"""Time per fine-tuning step, per transformer preset and fine-tuning mode.

    python scripts/benchmark_finetune.py --sizes tiny,small --modes full,head_only,lora --batch 8

A randomly initialized "pretrained" model in the configuration of configs/pretrain.py:<size>
(256x256 primary + 128x128 wrist with goal fusion, window 2, chunk 4, small language encoder,
diffusion head) is saved, then fine-tuned through the same pieces `finetune.py` uses: the
`PretrainedInitializer` hook (weights reused, mode's frozen patterns), `make_optimizer` and the
loop's `make_steps` train step, jitted with the state donated. Timing excludes compilation.
Prints one line per (size, mode) and, last, a JSON list. The logic lives in
`octo_like.training.benchmarks.finetune_benchmark`, where tests import it.
"""

from __future__ import annotations

import argparse
import os
import sys

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


def pretrained_config(size: str, tokenizer_dir: str):
    """configs/pretrain.py:<size>'s model section as a ModelConfig."""
    sys.path.insert(0, REPO)
    from configs import pretrain
    from octo_like.config.typed import build, to_plain
    from octo_like.model.config import ModelConfig

    model = to_plain(pretrain.get_config(size).model)
    model["language"]["checkpoint_dir"] = tokenizer_dir
    return build(ModelConfig, model, "model")


def main(argv=None) -> list[dict]:
    """One line per (size, mode), then the JSON list; returns the rows."""
    args = parse_args(argv)
    # Imported here, after parsing: flags and --help need neither JAX nor TensorFlow.
    from octo_like.training.benchmarks.finetune_benchmark import FinetuneBenchmarkOptions, run

    options = FinetuneBenchmarkOptions(
        **{
            **vars(args),
            "sizes": tuple(args.sizes.split(",")),
            "modes": tuple(args.modes.split(",")),
        }
    )
    return run(options, pretrained_config)


if __name__ == "__main__":
    main()

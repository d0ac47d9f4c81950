"""Converts a published Octo-1.5 checkpoint into a native octo_like checkpoint.

    python scripts/convert_octo.py --octo_dir octo-small-1.5 --t5_dir t5-base --out runs/octo_small
    python scripts/verify_checkpoint.py runs/octo_small

OCTO_DIR is what Octo's ``save_pretrained`` writes (``<step>/default``, config.json,
dataset_statistics.json, example_batch.msgpack); T5_DIR a local Hugging Face T5-base directory
(config.json, spiece.model). The result loads with ``OctoModel.load_pretrained(OUT)``, `Policy`,
the server and ``finetune.py --config.pretrained_path=OUT``, and computes Octo's actions
(docs/octo.md).
Prints the saved step directory, parameter count and datasets, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--octo_dir", required=True, help="Octo-1.5 save_pretrained directory")
    parser.add_argument("--t5_dir", required=True, help="local Hugging Face T5 directory")
    parser.add_argument("--out", required=True, help="octo_like checkpoint directory to write")
    parser.add_argument("--step", type=int, default=None, help="Octo step (default: latest)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from octo_like.model.octo_import.convert import convert_octo

    summary = convert_octo(args.octo_dir, args.t5_dir, args.out, args.step)
    print(
        f"wrote {summary['step_dir']}: {summary['parameters']:,} parameters "
        f"({summary['transformer']}, cameras {', '.join(summary['cameras'])}), statistics of "
        f"{len(summary['datasets'])} dataset(s)"
    )
    print(json.dumps(summary))
    return summary


def _cli() -> None:
    from octo_like.model.checkpoint_integrity import CheckpointCorruptError

    try:
        main()
    except (OSError, ValueError, CheckpointCorruptError) as error:
        sys.exit(f"error: {error}")  # names the file or directory and the problem


if __name__ == "__main__":
    _cli()

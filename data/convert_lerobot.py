"""Convert a LeRobot dataset directory (codebase v2.x or v3.0, as `lerobot` writes it) into an
RLDS dataset, with the spec and the fine-tuning config written as for raw episode files.

    python data/convert_lerobot.py --source ~/lerobot/my_so101 --out ~/tensorflow_datasets \
        --name my_so101 [--spec_out ~/my_so101_spec.json --config_out configs/finetune_my_so101.py]
        [--state_keys observation.state] [--action_key action] [--val_fraction 0.1]
        [--image_encoding jpeg|png] [--workers N] [--tolerance_s 1e-4] [--skip_bad] [--overwrite]

Videos are decoded with PyAV (`pip install -e ".[lerobot]"`), one episode per worker process.
data/README.md ("LeRobot datasets") says what maps to what.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import convert_raw_episodes  # noqa: E402  (the shared flags and --spec_out / --config_out writing)


def parse_args(argv=None) -> argparse.Namespace:
    parser = convert_raw_episodes.conversion_parser(
        __doc__.split("\n")[0], "the LeRobot dataset directory (has meta/)", "episodes"
    )
    parser.add_argument(
        "--state_keys",
        default=None,
        help="comma-separated float features forming the proprio (default: observation.state)",
    )
    parser.add_argument("--action_key", default="action")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (cores)")
    parser.add_argument("--tolerance_s", type=float, default=1e-4, help="LeRobot's tolerance_s")
    return convert_raw_episodes.parse_conversion_args(parser, argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like.data.lerobot.convert import convert_lerobot

    path = convert_lerobot(
        args.source,
        args.out,
        args.name,
        state_keys=args.state_keys.split(",") if args.state_keys else None,
        action_key=args.action_key,
        val_fraction=args.val_fraction,
        image_encoding=args.image_encoding,
        version=args.version,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        seed=args.seed,
        tolerance_s=args.tolerance_s,
        workers=args.workers,
    )
    convert_raw_episodes.write_spec_and_config(path, args)
    return path


def _cli() -> None:
    from octo_like.data.episode_files import EpisodeError

    try:
        main()
    except (EpisodeError, FileExistsError, FileNotFoundError, ValueError, ImportError) as error:
        sys.exit(f"error: {error}")  # the message names the dataset, episode and file


if __name__ == "__main__":
    _cli()

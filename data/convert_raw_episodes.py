"""Convert a folder of episode files (.npz / .hdf5, one per episode) into an RLDS dataset.

    python data/convert_raw_episodes.py --source /tmp/my_robot_episodes \
        --out ~/tensorflow_datasets --name my_robot [--val_fraction 0.1] \
        [--image_encoding jpeg|png] [--skip_bad] [--overwrite] [--spec_out ~/my_robot_spec.json \
        [--config_out configs/finetune_my_robot.py]]

A thin command line over `octo_like.data.raw_episodes.convert_episodes`; see data/README.md for
the file layout and for registering the result in a fine-tuning config. `--config_out` writes
that config: it reads the spec, names the dataset, sets the action dim and makes the model read
every camera and the state the spec maps.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def conversion_parser(description: str, source_help: str, what: str) -> argparse.ArgumentParser:
    """The flags every converter into RLDS shares (data/convert_lerobot.py adds its own);
    `what` names the units --skip_bad leaves out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", required=True, help=source_help)
    parser.add_argument("--out", required=True, help="TFDS data root to write NAME/VERSION into")
    parser.add_argument("--name", required=True, help="dataset name (lower_case_with_digits)")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--image_encoding", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    parser.add_argument("--skip_bad", action="store_true", help=f"leave out invalid {what}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--spec_out", default=None, help="also write the suggested spec (JSON)")
    parser.add_argument(
        "--config_out",
        default=None,
        help="also write a fine-tuning config file reading the spec (needs --spec_out)",
    )
    return parser


def parse_conversion_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.config_out and not args.spec_out:
        parser.error("--config_out needs --spec_out: the config file reads the spec from there")
    return args


def parse_args(argv=None) -> argparse.Namespace:
    parser = conversion_parser(
        __doc__.split("\n")[0], "folder of episode files (recursive)", "files"
    )
    return parse_conversion_args(parser, argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like.data.raw_episodes import convert_episodes

    path = convert_episodes(
        args.source,
        args.out,
        args.name,
        val_fraction=args.val_fraction,
        image_encoding=args.image_encoding,
        version=args.version,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        seed=args.seed,
    )
    write_spec_and_config(path, args)
    return path


def write_spec_and_config(path: str, args: argparse.Namespace) -> None:
    """--spec_out and --config_out of a converted dataset (data/convert_lerobot.py too)."""
    from octo_like.data.raw_episodes import spec_json, suggest_dataset_spec_for

    if args.spec_out:
        spec = suggest_dataset_spec_for(path, args.name)
        with open(args.spec_out, "w") as file:
            file.write(spec_json(spec) + "\n")
        print(f"suggested spec written to {args.spec_out}")
    if args.config_out:
        from octo_like.data.suggested_config import finetune_config_file

        with open(args.config_out, "w") as file:
            file.write(finetune_config_file(spec, path, args.spec_out, args.config_out))
        print(
            f"fine-tuning config written to {args.config_out} (it reads {args.spec_out}):\n"
            f"  python finetune.py --config {args.config_out}:full,language "
            f"--workdir runs/ft_{args.name} --config.pretrained_path=runs/laptop/checkpoints"
        )


def _cli() -> None:
    from octo_like.data.raw_episodes import EpisodeError

    try:
        main()
    except (EpisodeError, FileExistsError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")  # the message names the files and problems; no traceback


if __name__ == "__main__":
    _cli()

"""Print the layout of one training batch and optionally save its images as a PNG grid.

    python scripts/inspect_batch.py --data_dir ../shared/data/bridge_dataset/1.0.0 \
        --batch_size 8 --window 2 --action_horizon 4 --resize 256 --out batch.png
"""

from __future__ import annotations

import argparse
import textwrap

from octo_like.host import lean_tensorflow  # noqa: E402  (imports nothing)

lean_tensorflow()  # as train.py: before TensorFlow is imported


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="prepared TFDS dir or data root")
    parser.add_argument("--dataset", default=None, help="registry name (default: the builder's)")
    parser.add_argument(
        "--spec", default=None, help="DatasetSpec JSON of a dataset outside the registry"
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--action_horizon", type=int, default=4)
    parser.add_argument("--resize", type=int, default=256, help="primary camera size")
    parser.add_argument("--wrist_size", type=int, default=128)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write a PNG grid of the images here")
    parser.add_argument("--statistics_cache_dir", default="~/.cache/octo_like/statistics")
    return parser.parse_args(argv)


def save_image_grid(batch: dict, path: str, max_rows: int = 8) -> None:
    """Rows are batch elements; columns are (camera, history step); titles are instructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    observation = batch["observation"]
    cameras = sorted(k for k in observation if k.startswith("image_"))
    window = observation[cameras[0]].shape[1]
    rows = min(max_rows, observation[cameras[0]].shape[0])
    columns = [(camera, step) for camera in cameras for step in range(window)]
    figure, axes = plt.subplots(
        rows, len(columns), figsize=(2.2 * len(columns), 2.4 * rows), squeeze=False
    )
    for row in range(rows):
        instruction = batch["task"]["language_instruction"][row].decode() or "(no instruction)"
        for column, (camera, step) in enumerate(columns):
            axis = axes[row, column]
            axis.imshow(observation[camera][row, step])
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"{camera[6:]} t-{window - 1 - step}", fontsize=8)
        axes[row, 0].set_ylabel("\n".join(textwrap.wrap(instruction, 24)), fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like import schema
    from octo_like.data import builder_dir
    from octo_like.data.pipeline import make_pipeline
    from octo_like.data.presets import single_dataset_config

    extra_specs = {}
    if args.spec:  # e.g. written by data/convert_raw_episodes.py --spec_out
        import json

        from octo_like.data.oxe.spec import DatasetSpec

        with open(args.spec) as file:
            spec = DatasetSpec.from_dict(json.load(file))
        extra_specs[spec.name] = spec
    name = args.dataset or builder_dir.open_builder(args.data_dir).info.name
    config = single_dataset_config(
        args.data_dir,
        name,
        batch_size=args.batch_size,
        window=args.window,
        action_horizon=args.action_horizon,
        primary_size=args.resize,
        wrist_size=args.wrist_size,
        augment=args.augment,
        shuffle_buffer=256,
        seed=args.seed,
        statistics_cache_dir=args.statistics_cache_dir,
        extra_specs=extra_specs,
    )
    pipeline = make_pipeline(config)
    batch = next(iter(pipeline))
    print(f"batch of {name} (per-process batch {pipeline.per_process_batch_size}):")
    for line in schema.describe_tree(batch):
        print("  " + line)
    if args.out:
        save_image_grid(batch, args.out)
        print(f"wrote {args.out}")
    return batch


if __name__ == "__main__":
    main()

"""TFDS builder template for a folder of your robot's episode files (one .npz / .hdf5 each).

Copy this folder, rename both the folder and this file after your dataset, then edit the
constants below to match your episodes::

    cp -r data/my_robot data/kitchen_arm
    mv data/kitchen_arm/my_robot_dataset_builder.py data/kitchen_arm/kitchen_arm_dataset_builder.py
    python data/kitchen_arm/kitchen_arm_dataset_builder.py --manual_dir /path/to/episodes \
        --data_dir ~/tensorflow_datasets
    # or, where the TFDS command line works (tfds 4.9.10's needs apache_beam installed):
    tfds build data/kitchen_arm --manual_dir /path/to/episodes --data_dir ~/tensorflow_datasets

The dataset is then at ``~/tensorflow_datasets/kitchen_arm/1.0.0`` (the name comes from this
file's name). The file layout is
documented in `octo_like.data.episode_files`; reading, validation and the train/val split come
from `octo_like.data.raw_episodes`, so this builder and ``data/convert_raw_episodes.py`` (which
infers the features instead of declaring them) write the same RLDS layout.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib

import tensorflow_datasets as tfds

from octo_like.data import raw_episodes
from octo_like.data.rlds_writer import RldsSchema, image, tensor, text

# ---- edit these to match your episodes ----------------------------------------------------
# One image feature per camera in the files' ``images/<camera>``: (height, width) and the
# encoding ("jpeg": small, slightly lossy, like OXE; "png": exact, larger).
# ``state`` / ``action``: the dims of your proprio and action vectors. Remove ``state`` if your
# files have none; add ``"success": scalar("bool")`` to episode_metadata if they record it.
FEATURES = RldsSchema(
    observation={
        "front": image(64, 64, encoding="jpeg"),
        "wrist": image(32, 32, encoding="jpeg"),
        "state": tensor((6,)),
    },
    step={"action": tensor((7,)), "language_instruction": text()},
    episode_metadata={"file_path": text()},
)
VAL_FRACTION = 0.1  # share of the episodes held out as the "val" split
SPLIT_SEED = 0  # the split is a seeded shuffle: the same files always land in the same split
SKIP_BAD = False  # True: leave out invalid files with a warning instead of failing
# --------------------------------------------------------------------------------------------


class Builder(tfds.core.GeneratorBasedBuilder):
    """RLDS episodes converted from a folder of .npz / .hdf5 files (see module docstring)."""

    # "<name>_dataset_builder.py" -> "<name>", also when this file is run as a script.
    name = pathlib.Path(__file__).name.removesuffix("_dataset_builder.py")
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First conversion."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the folder holding your episode files with --manual_dir "
        "(tfds build) or DownloadConfig(manual_dir=...)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Robot episodes converted from .npz / .hdf5 files.",
            features=FEATURES.features(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source = os.fspath(dl_manager.manual_dir)
        files = raw_episodes.list_episode_files(source)
        splits = raw_episodes.split_episode_files(files, VAL_FRACTION, SPLIT_SEED)
        return {split: self._generate_examples(paths, source) for split, paths in splits.items()}

    def _generate_examples(self, paths: list[str], source: str):
        """Yields (key, episode) per file; keys are paths relative to the source folder."""
        for path in paths:
            try:
                episode = raw_episodes.read_episode(path)
                raw_episodes.check_matches_schema(episode, FEATURES)
            except raw_episodes.EpisodeError as error:
                if not SKIP_BAD:
                    raise
                logging.warning("skipping invalid episode file %s", error)
                continue
            key = os.path.relpath(path, source)
            yield key, raw_episodes.episode_example(episode, FEATURES, key)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description="Build the dataset of this template.")
    parser.add_argument("--manual_dir", required=True, help="folder of episode files")
    parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="TFDS data root")
    args = parser.parse_args(argv)
    builder = Builder(data_dir=os.path.expanduser(args.data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    )
    print(f"prepared {builder.data_dir}")
    return os.fspath(builder.data_dir)


if __name__ == "__main__":
    main()

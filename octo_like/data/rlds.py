"""Reading RLDS episodes from TFDS: builders, per-process splits, episodes -> trajectories.

Stage 1 of the data flow (see `octo_like/schema.py`). Images stay encoded (decoding is
skipped) so that shuffle buffers hold compact bytes; frames are decoded only after shuffling.
"""

from __future__ import annotations

import dataclasses
import difflib

import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data.dataset import as_written


@dataclasses.dataclass(frozen=True)
class ProcessShard:
    """Which part of every dataset this process reads: process `index` of `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"process index {self.index} is not in [0, {self.count})")


def open_builder(source: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """A TFDS builder from a prepared directory or from ``name[:version]`` under `data_dir`.

    `source` is a directory holding ``dataset_info.json`` (local or ``gs://``, read through
    tf.io.gfile), or a dataset name with `data_dir` the TFDS data root.
    """
    if tf.io.gfile.exists(tf.io.gfile.join(source, "dataset_info.json")):
        return tfds.builder_from_directory(source)
    if data_dir is None:
        raise FileNotFoundError(
            f"{source!r} is not a prepared TFDS directory (no dataset_info.json) and no "
            "data_dir was given to look it up by name"
        )
    name, _, version = source.partition(":")
    root = tf.io.gfile.join(data_dir, name)
    if not tf.io.gfile.isdir(root):
        present = tf.io.gfile.listdir(data_dir) if tf.io.gfile.isdir(data_dir) else []
        present = [p.rstrip("/") for p in present]
        close = difflib.get_close_matches(name, present, n=3)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise FileNotFoundError(f"dataset {name!r} not found under {data_dir!r}{hint}")
    if not version:
        versions = sorted(
            (v.rstrip("/") for v in tf.io.gfile.listdir(root)),
            key=lambda v: tuple(int(p) if p.isdigit() else -1 for p in v.split(".")),
        )
        complete = [
            v
            for v in versions
            if tf.io.gfile.exists(tf.io.gfile.join(root, v, "dataset_info.json"))
        ]
        if not complete:
            raise FileNotFoundError(f"no prepared version of {name!r} under {root!r}")
        version = complete[-1]
    return tfds.builder_from_directory(tf.io.gfile.join(root, version))


def open_source(location: str, name: str) -> tfds.core.DatasetBuilder:
    """`location` is either the prepared directory of `name` or a data root holding it."""
    if tf.io.gfile.exists(tf.io.gfile.join(location, "dataset_info.json")):
        return tfds.builder_from_directory(location)
    return open_builder(name, data_dir=location)


def split_for_process(split: str, shard: ProcessShard) -> str | tfds.typing.SplitArg:
    """The part of `split` that process `shard.index` reads; the parts are disjoint and cover it."""
    if shard.count == 1:
        return split
    return tfds.even_splits(split, n=shard.count)[shard.index]


class _StepsAsColumns(tfds.decode.Decoder):
    """Decodes an episode's ``steps`` straight into stacked columns, images left encoded.

    TFDS would otherwise wrap the steps in a nested tf.data.Dataset per episode, and batching
    that back into tensors costs ~15 ms per episode: far more than reading it.
    """

    def decode_example(self, serialized):
        return _decode_columns(self.feature.feature, serialized)

    @property
    def dtype(self):
        return tf.nest.map_structure(lambda info: info.dtype, self.feature.get_serialized_info())


def _decode_columns(features: tfds.features.FeaturesDict, columns: dict) -> dict:
    decoded = {}
    for key, feature in features.items():
        if isinstance(feature, tfds.features.FeaturesDict):
            decoded[key] = _decode_columns(feature, columns[key])
        elif isinstance(feature, tfds.features.Image):
            decoded[key] = columns[key]  # encoded bytes; decoded after shuffling
        else:
            decoded[key] = feature.decode_batch_example(columns[key])
    return decoded


def read_episodes(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shard: ProcessShard = ProcessShard(),
    shuffle_files: bool = True,
    seed: int = 0,
    num_parallel_reads: int = 2,
) -> tf.data.Dataset:
    """RLDS episodes of this process's part of `split` as trajectories, images left encoded.

    Each element is a trajectory: every step feature stacked along a leading T axis (nesting as
    in the RLDS step, e.g. ``observation/state float32[T, 7]``, images ``string[T]``), plus
    ``episode_metadata`` (unbatched, when the dataset has it) and ``tfds_id`` (string: the
    record's file and position, for error messages). A zero-length episode gives T = 0
    (validation reports it; it is not dropped silently).
    """
    if split.split("[")[0] not in builder.info.splits:
        raise ValueError(
            f"dataset {builder.info.name!r} has no split {split!r}; "
            f"available: {sorted(builder.info.splits)}"
        )
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        interleave_cycle_length=num_parallel_reads,
        num_parallel_calls_for_interleave_files=num_parallel_reads,
        add_tfds_id=True,
    )
    episodes = builder.as_dataset(
        split=split_for_process(split, shard),
        decoders={"steps": _StepsAsColumns()},
        shuffle_files=shuffle_files,
        read_config=read_config,
    )
    return episodes.map(as_written(_flatten_episode), num_parallel_calls=num_parallel_reads)


def _flatten_episode(episode: dict) -> dict:
    trajectory = dict(episode["steps"])
    for key in ("episode_metadata", "tfds_id"):
        if key in episode:
            trajectory[key] = episode[key]
    return trajectory

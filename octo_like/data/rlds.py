"""Reading RLDS episodes from TFDS: per-process splits, episodes -> trajectories.

Stage 1 of the data flow (see `octo_like/schema.py`). Images stay encoded (decoding is
skipped) so that shuffle buffers hold compact bytes; frames are decoded only after shuffling.
Builders are opened, and their metadata checked, in `builder_dir.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading

import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data.builder_dir import check_shard_files
from octo_like.data.dataset import as_written
from octo_like.data.splits import split_names
from octo_like.data.validation import SkippedEpisodes

# Shard files read at once (TFDS's default interleave width): part of which order the episodes
# come in, so fixed, never scaled with the threads. With the width at the thread count, a
# 2-thread and a 1-thread run of one command saw other batches (issue 70).
FILES_INTERLEAVED = 16


@dataclasses.dataclass(frozen=True)
class ProcessShard:
    """Which part of every dataset this process reads: process `index` of `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"process index {self.index} is not in [0, {self.count})")


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
    skip_damaged_shards: bool = False,
    skipped: SkippedEpisodes | None = None,
) -> tf.data.Dataset:
    """RLDS episodes of this process's part of `split` as trajectories, images left encoded.

    Each element is a trajectory: every step feature stacked along a leading T axis (nesting as
    in the RLDS step, e.g. ``observation/state float32[T, 7]``, images ``string[T]``), plus
    ``episode_metadata`` (unbatched, when the dataset has it) and ``tfds_id`` (string: the
    record's file and position, for error messages). A zero-length episode gives T = 0
    (validation reports it; it is not dropped silently).

    Shards are read here, one `tf.data.TFRecordDataset` per file (what TFDS does, see
    `_read_shard`), so that a truncated or corrupt shard ends at its damage instead of raising
    a raw DataLossError (or, under ``ignore_errors``, re-reading the bad shard forever): the
    records before the damage are kept; then the run fails with a `DataError` naming the
    dataset, the shard file and the record index, or, with `skip_damaged_shards`, the rest of
    the shard is skipped and counted once in `skipped` (logged like a skipped episode).
    """
    split_names(builder, split)  # a ValueError naming the dataset's splits
    file_format = builder.info.file_format or tfds.core.FileFormat.TFRECORD
    if tfds.core.FileFormat(file_format) != tfds.core.FileFormat.TFRECORD:
        check_shard_files(builder, split, [])
        return _read_with_tfds(builder, split, shard, shuffle_files, seed, num_parallel_reads)
    instructions = builder.info.splits[split_for_process(split, shard)].file_instructions
    instructions = [i for i in instructions if _wanted(i) > 0]
    name = builder.info.name
    check_shard_files(builder, split, [os.fspath(i.filename) for i in instructions])
    damaged = _DamagedShards(name, skipped if skipped is not None else SkippedEpisodes())
    table = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([i.filename for i in instructions], tf.string),
            tf.constant([i.skip for i in instructions], tf.int64),
            tf.constant([_wanted(i) for i in instructions], tf.int64),
        )
    )  # empty for a process whose part holds no record
    if shuffle_files and len(instructions) > 1:
        table = table.shuffle(len(instructions), seed=seed, reshuffle_each_iteration=True)
    cycle = max(1, min(FILES_INTERLEAVED, len(instructions)))
    records = table.interleave(
        as_written(
            lambda path, skip, wanted: _read_shard(
                path, skip, wanted, name, damaged, skip_damaged_shards
            )
        ),
        cycle_length=cycle,
        block_length=16,  # as TFDS reads
        num_parallel_calls=min(cycle, num_parallel_reads),  # threads: speed, not order
        deterministic=True,
    )
    parser = tfds.core.example_parser.ExampleParser(builder.info.features.get_serialized_info())
    decode = functools.partial(
        builder.info.features.decode_example, decoders={"steps": _StepsAsColumns()}
    )

    def episode(tfds_id, serialized):
        decoded = decode(parser.parse_example(serialized))
        decoded["tfds_id"] = tfds_id
        return _flatten_episode(decoded)

    return records.map(as_written(episode), num_parallel_calls=num_parallel_reads)


def _read_with_tfds(builder, split, shard, shuffle_files, seed, num_parallel_reads):
    """Other file formats than TFRecord (array_record...): read by TFDS, without the damage
    handling of `_read_shard`."""
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        interleave_cycle_length=FILES_INTERLEAVED,
        num_parallel_calls_for_interleave_files=min(FILES_INTERLEAVED, num_parallel_reads),
        add_tfds_id=True,
    )
    episodes = builder.as_dataset(
        split=split_for_process(split, shard),
        decoders={"steps": _StepsAsColumns()},
        shuffle_files=shuffle_files,
        read_config=read_config,
    )
    return episodes.map(as_written(_flatten_episode), num_parallel_calls=num_parallel_reads)


def _wanted(instruction) -> int:
    """How many records of its shard `instruction` reads past its `skip`."""
    take = instruction.take
    if take is None or take < 0:
        take = instruction.examples_in_shard - instruction.skip
    return int(take)


class _DamagedShards:
    """Records each damaged shard once (a repeated dataset re-reads it every epoch)."""

    def __init__(self, dataset: str, skipped: SkippedEpisodes):
        self._dataset = dataset
        self._skipped = skipped
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()

    def record(self, shard: bytes, problem: bytes) -> bool:
        with self._lock:
            first = bytes(shard) not in self._seen
            self._seen.add(bytes(shard))
        if first:
            self._skipped.record(self._dataset.encode(), bytes(shard), bytes(problem))
        return True


def _read_shard(
    path: tf.Tensor,
    skip: tf.Tensor,
    wanted: tf.Tensor,
    dataset: str,
    damaged: _DamagedShards,
    skip_damaged: bool,
) -> tf.data.Dataset:
    """(tfds_id, serialized episode) of records ``[skip, skip + wanted)`` of one shard.

    A read error (truncation, a CRC mismatch: DataLossError) ends the shard's
    TFRecordDataset, which moves on to its next (here: no) file, so ``ignore_errors`` on this
    single-file dataset stops instead of retrying. A count of the records read, checked at the
    shard's end, tells a damaged shard from a complete one.
    """
    end = tf.cast(skip + wanted, tf.int64)
    skip = tf.cast(skip, tf.int64)
    records = tf.data.TFRecordDataset(path).ignore_errors(log_warning=False).take(end)
    records = records.map(lambda record: (record, False)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant(""), True))
    )
    # (index, byte offset, record, is_end); the end marker's index is the number of records
    # read and its offset where the first unread record starts (a TFRecord frames each record
    # with 16 bytes: length, its CRC, and the data's CRC).
    records = records.scan(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        lambda state, item: (
            (
                state[0] + tf.cast(~item[1], tf.int64),
                state[1] + tf.cast(tf.strings.length(item[0]) + 16, tf.int64),
            ),
            (state[0], state[1], item[0], item[1]),
        ),
    )
    basename = tf.strings.regex_replace(path, r"^.*/", "")

    def problem(count, offset):
        return tf.strings.join([
            "shard ", path, " is truncated or corrupt at record ", tf.strings.as_string(count),
            " (byte offset ", tf.strings.as_string(offset), "): ",
            tf.strings.as_string(end - count), " record(s) from there on were not read",
        ])  # fmt: skip

    def complete(index, offset, record, is_end):
        short = is_end & (index < end)
        if skip_damaged:
            recorded = tf.cond(
                short,
                lambda: tf.numpy_function(
                    damaged.record, [basename, problem(index, offset)], tf.bool, stateful=True
                ),
                lambda: tf.constant(True),
            )
            with tf.control_dependencies([recorded]):
                return ~is_end & (index >= skip)
        assertion = tf.debugging.Assert(
            ~short, [f"dataset {dataset!r},", problem(index, offset)], summarize=1
        )
        with tf.control_dependencies([assertion]):
            return ~is_end & (index >= skip)

    records = records.filter(as_written(complete))

    def with_id(index, offset, record, is_end):
        return tf.strings.join([basename, tf.strings.as_string(index)], "__"), record

    return records.map(as_written(with_id))


def _flatten_episode(episode: dict) -> dict:
    trajectory = dict(episode["steps"])
    for key in ("episode_metadata", "tfds_id"):
        if key in episode:
            trajectory[key] = episode[key]
    return trajectory

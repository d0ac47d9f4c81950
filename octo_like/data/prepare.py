"""Each dataset of a mixture opened, standardized and described by its statistics (over the split
it trains on, or `DataConfig.statistics_split`, e.g. "all" as Octo computes them):
the first stage of the input pipeline (RLDS -> validated, standardized trajectories), shared by
`pipeline.make_pipeline`, the statistics pass and scripts that inspect single datasets.

`prepare_datasets` opens every dataset (tracing its standardization where its statistics are
not cached) before it computes any statistics, so that a caller learns the standardized widths,
which decide the batch's shapes, while the statistics are still being read: a training run
compiles its step meanwhile.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from octo_like import schema
from octo_like.data import builder_dir, raw_checks, rlds
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.content_key import split_content_key
from octo_like.data.dataset import Parallelism, TrajectoryDataset, as_written
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.data.oxe.standardize import standardizer_for
from octo_like.data.restructure import check_cameras, restructure
from octo_like.data.splits import split_names
from octo_like.data.statistics_cache import (
    cached_statistics,
    compute_and_cache_statistics,
    dataset_identity,
    statistics_fingerprint,
)
from octo_like.data.validation import (
    SkippedEpisodes,
    apply_check,
    check_trajectories,
    data_errors,
)
from octo_like.normalization import DatasetStatistics

# (action widths, proprio widths) of the standardized datasets, in the sources' order; None
# where the data alone decides a width (known once the statistics are).
WidthsCallback = Callable[[list, list], None]


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A dataset of a mixture, opened, with its spec and statistics (`statistics_split_of`)."""

    source: DatasetSource
    spec: DatasetSpec
    builder: object
    statistics: DatasetStatistics


def standardized_trajectories(
    builder,
    spec: DatasetSpec,
    split: str,
    cameras: tuple[str, ...],
    *,
    shard: rlds.ProcessShard = rlds.ProcessShard(),
    shuffle: bool = False,
    repeat: bool = False,
    cache: bool = False,
    seed: int = 0,
    parallelism: Parallelism = Parallelism(),
    skip_bad_episodes: bool = False,
    skipped: SkippedEpisodes | None = None,
) -> TrajectoryDataset:
    """Schema stage 2 trajectories of one dataset, validated, not yet normalized."""
    episodes = rlds.read_episodes(
        builder,
        split,
        shard=shard,
        shuffle_files=shuffle,
        seed=seed,
        num_parallel_reads=parallelism.read,
        skip_damaged_shards=skip_bad_episodes,
        skipped=skipped,
    )
    trajectories = TrajectoryDataset(episodes, spec.name, parallelism)
    if cache:
        trajectories = trajectories.apply(lambda ds: ds.cache())
    if repeat:
        trajectories = trajectories.apply(lambda ds: ds.repeat())
    check_cameras(spec, cameras)
    trajectories = trajectories.apply(
        lambda ds: _check_raw(ds, builder, spec, cameras, skip_bad_episodes, skipped)
    )
    trajectories = trajectories.map(standardizer_for(spec))
    trajectories = trajectories.apply(lambda ds: ds.enumerate()).map(
        lambda index, traj: restructure(traj, spec, cameras, index)
    )
    return trajectories.apply(
        lambda ds: check_trajectories(
            ds, spec.name, skip_bad_episodes=skip_bad_episodes, skipped=skipped
        )
    )


def _raw_episode_id(episode: dict, spec: DatasetSpec) -> tf.Tensor:
    """How a raw episode is named in an error: its TFDS id, else the dataset's name."""
    return episode.get("tfds_id", tf.constant(spec.name))


def _check_raw(
    episodes: tf.data.Dataset, builder, spec: DatasetSpec, cameras, skip_bad_episodes, skipped
) -> tf.data.Dataset:
    """The checks of `raw_checks.py` on raw episodes (schema stage 1), before standardization."""
    skipped = skipped if skipped is not None else SkippedEpisodes()
    shapes = raw_checks.expected_image_shapes(builder, spec, cameras)
    episode_of = lambda traj: _raw_episode_id(traj, spec)  # noqa: E731
    keys = [spec.image_keys[c] for c in cameras if spec.image_keys.get(c)]
    if skip_bad_episodes and keys:  # first, so that no later check meets undecodable bytes
        episodes = _drop_undecodable(episodes, spec, keys, episode_of, skipped)
    # Without skipping, an undecodable image fails its batch (located: see Pipeline.__iter__).
    return apply_check(
        episodes,
        lambda traj: raw_checks.raw_problem(traj, spec, shapes),
        episode_of,
        spec.name,
        skip_bad_episodes=skip_bad_episodes,
        skipped=skipped,
    )


def _drop_undecodable(episodes, spec: DatasetSpec, keys, episode_of, skipped):
    """Episodes whose images of `keys` all decode (1/8-scale test); the others are counted."""
    tracker = raw_checks.DecodeTracker(spec.name, skipped)

    def entered(traj):
        done = tf.numpy_function(tracker.entered, [episode_of(traj)], tf.bool, stateful=True)
        with tf.control_dependencies([done]):
            return tf.nest.map_structure(tf.identity, traj)

    def test_decode(traj):  # the decoded sizes are an output, so the decode cannot be pruned
        return traj, raw_checks.decode_check(traj, keys, spec)

    def passed(traj, decoded_pixels):
        done = tf.numpy_function(tracker.passed, [episode_of(traj)], tf.bool, stateful=True)
        with tf.control_dependencies([done, decoded_pixels]):
            return tf.nest.map_structure(tf.identity, traj)

    episodes = episodes.map(as_written(entered))  # sequential: records the input order
    episodes = episodes.map(
        as_written(test_decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return episodes.ignore_errors().map(as_written(passed))


def prepare_datasets(
    sources,
    config: DataConfig,
    *,
    max_workers: int = 8,
    while_computing: WidthsCallback | None = None,
) -> list[PreparedDataset]:
    """Every source opened with its statistics (`prepare_dataset`), datasets in parallel
    threads (tf.data and file reads release the GIL), in the order given.

    `while_computing(action_widths, proprio_widths)`: called in this thread once every dataset
    is opened, with the standardized widths (from cached statistics, else from the traced
    trajectories' element spec), while the statistics not cached are computed in the pool (an
    error it raises is raised once they are done: keep it best effort).
    """
    sources = list(sources)
    if not sources:
        return []
    with ThreadPoolExecutor(min(max_workers, len(sources))) as pool:
        opened = list(pool.map(lambda source: _open(source, config), sources))
        computing = [pool.submit(_prepared, dataset, config) for dataset in opened]
        if while_computing is not None:
            widths = [dataset.widths() for dataset in opened]
            while_computing([w[0] for w in widths], [w[1] for w in widths])
        return [future.result() for future in computing]


def prepare_dataset(
    source: DatasetSource, config: DataConfig, *, statistics: DatasetStatistics | None = None
) -> PreparedDataset:
    """Opens `source` and loads (or computes and caches) its statistics (`statistics_split_of`).

    `statistics`: already known (e.g. received from the process that computed them); then
    nothing is read or computed for them.
    """
    if statistics is not None:
        spec = get_dataset_spec(source.name, config.extra_specs)
        statistics.check(spec.name)  # received, not computed here: checked all the same
        return PreparedDataset(
            source, spec, builder_dir.open_source(source.location, source.name), statistics
        )
    return _prepared(_open(source, config), config)


@dataclasses.dataclass(frozen=True)
class _Opened:
    """A dataset opened for its statistics: cached ones, or the trajectories to compute them
    from (traced, not yet read)."""

    source: DatasetSource
    spec: DatasetSpec
    builder: object
    fingerprint: str
    cached: DatasetStatistics | None
    trajectories: tf.data.Dataset | None
    skipped: SkippedEpisodes | None = None  # episodes the statistics pass left out

    def widths(self) -> tuple[int | None, int | None]:
        """The standardized (action, proprio) widths, unpadded; None where not static."""
        if self.cached is not None:
            return statistics_widths(self.cached)
        return element_widths(self.trajectories.element_spec)


def element_widths(element_spec: dict) -> tuple[int | None, int | None]:
    """The (action, proprio) widths of standardized trajectories' element spec; None where
    not static."""
    action = element_spec[schema.ACTION]
    proprio = element_spec["observation"][schema.PROPRIO]
    return action.shape[-1], proprio.shape[-1]


def statistics_widths(statistics: DatasetStatistics) -> tuple[int, int]:
    """The standardized (action, proprio) widths `statistics` describe (0: no proprio)."""
    proprio = statistics.proprio
    return statistics.action.mean.size, 0 if proprio is None else proprio.mean.size


def _open(source: DatasetSource, config: DataConfig) -> _Opened:
    spec = get_dataset_spec(source.name, config.extra_specs)
    builder = builder_dir.open_source(source.location, source.name)
    split = statistics_split_of(source, config)
    split_names(builder, split)  # a typo'd split names the dataset's splits, before any read
    fingerprint = statistics_fingerprint_for(builder, spec, split)
    cache_dir = os.path.expanduser(config.statistics_cache_dir)
    cached = cached_statistics(cache_dir, fingerprint, spec.name)
    trajectories, skipped = None, SkippedEpisodes()
    if cached is None:
        with data_errors(_locator(builder, spec, split, config)):
            trajectories = standardized_trajectories(
                builder, spec, split, config.cameras,
                skip_bad_episodes=config.skip_bad_episodes, skipped=skipped,
            ).dataset  # fmt: skip
    opened = _Opened(source, spec, builder, fingerprint, cached, trajectories, skipped)
    fixed = config.fixed_statistics.get(source.name)
    return opened if fixed is None else _with_fixed_statistics(opened, fixed)


def _with_fixed_statistics(opened: _Opened, fixed) -> _Opened:
    """`opened` normalized by the given statistics (`DataConfig.fixed_statistics`) instead of
    its own, which are then neither read nor computed; their widths must be the data's."""
    name = opened.spec.name
    statistics = DatasetStatistics.from_dict(fixed, name)
    own, given = opened.widths(), statistics_widths(statistics)
    for field, width, expected in zip(("action", "proprio"), own, given, strict=True):
        if width is not None and width != expected:
            raise ValueError(
                f"dataset {name!r}: the fixed statistics describe a {field} of width {expected}"
                f", the data's {field} has width {width}"
            )
    return dataclasses.replace(opened, cached=statistics)


def _prepared(dataset: _Opened, config: DataConfig) -> PreparedDataset:
    """`dataset` with its statistics: the cached ones, else computed and cached."""
    statistics = dataset.cached
    if statistics is None:
        source, spec, builder = dataset.source, dataset.spec, dataset.builder
        try:
            statistics = compute_and_cache_statistics(
                lambda: dataset.trajectories,
                fingerprint=dataset.fingerprint,
                cache_dir=os.path.expanduser(config.statistics_cache_dir),
                name=spec.name,
                locate=_locator(builder, spec, statistics_split_of(source, config), config),
            )
        except ValueError as error:
            counts = dataset.skipped.counts if dataset.skipped is not None else {}
            if "has no trajectories" not in str(error) or not counts:
                raise
            reasons = "; ".join(f"{n} x {problem}" for (_, problem), n in counts.most_common())
            raise ValueError(
                f"dataset {spec.name!r}: all {sum(counts.values())} episodes of split "
                f"{statistics_split_of(source, config)!r} were skipped as bad "
                f"(data.skip_bad_episodes): {reasons}"
            ) from error
    return PreparedDataset(dataset.source, dataset.spec, dataset.builder, statistics)


def statistics_split_of(source: DatasetSource, config: DataConfig) -> str:
    """The split `source`'s statistics are computed over: `config.statistics_split` (e.g.
    "all"), else the split it trains on."""
    return config.statistics_split or source.split


def _locator(builder, spec: DatasetSpec, split: str, config: DataConfig):
    """Names an image of the dataset that fails to decode (`validation.data_errors`)."""
    return lambda: raw_checks.describe_undecodable([(builder, spec, split)], config.cameras)


def statistics_fingerprint_for(builder, spec: DatasetSpec, split: str) -> str:
    """Cache key of a dataset's statistics: its identity and the split they are computed over
    ("train" and "all" are different keys), what that split's shards hold (so an in-place
    rewrite is noticed, `content_key.py`) and everything that shapes actions."""
    identity = {
        **dataset_identity(builder.info),
        "split": split,
        "content": split_content_key(builder, split),
    }
    return statistics_fingerprint(identity, {"spec": spec.to_dict()})

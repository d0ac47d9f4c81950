"""The input pipeline, top to bottom: RLDS -> standardize -> trajectory transforms -> frames ->
weighted mixture -> shuffle (encoded) -> decode / resize / augment -> batches.

`make_pipeline(config)` is the one entry point; its first stage, each dataset opened,
standardized and described by its statistics, is `prepare.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from octo_like import schema
from octo_like.data import frame_transforms, raw_checks, rlds, traj_transforms
from octo_like.data.config import DataConfig
from octo_like.data.dataset import FrameDataset, apply_options
from octo_like.data.normalize import (
    as_constants,
    normalization_maps,
    normalize_trajectory_with,
)
from octo_like.data.prepare import (
    PreparedDataset,
    element_widths,
    prepare_dataset,
    standardized_trajectories,
)
from octo_like.data.validation import SkippedEpisodes, data_errors
from octo_like.normalization import DatasetStatistics

log = logging.getLogger(__name__)

# Salts keep the random streams of different stages independent under one run seed.
_SALT_TRAJECTORY, _SALT_FRAME = 1, 2


def _trajectory_transform(config: DataConfig, dims):
    """The per-trajectory transform (stage 2 -> stage 3, T kept), seeded per trajectory, as
    ``transform(traj, seed, maps)`` with a dataset's `normalization_maps` as tensors.

    One `tf.function` for every dataset of a mixture: it is traced once per distinct
    trajectory structure and dtype/shape signature, and the other datasets' maps only call it
    (the 25 datasets of `oxe_magic_soup` have 6 such signatures; tracing it per dataset, with
    each one's statistics as constants, was a third of building their pipeline).
    """
    tcfg = config.trajectory
    cameras = config.cameras
    max_action_dim, max_proprio_dim = dims

    @tf.function(autograph=False)
    def transform(traj: dict, seed: tf.Tensor, maps: dict) -> dict:
        goal_seed, subsample_seed, task_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3)
        )
        length = tf.shape(traj[schema.ACTION])[0]
        traj = dict(traj)
        traj[schema.EPISODE_ID] = tf.fill([length], traj[schema.EPISODE_ID])
        traj = normalize_trajectory_with(traj, maps, config.normalization)
        traj = traj_transforms.add_pad_mask_dict(traj)
        traj = traj_transforms.pad_action_and_proprio(traj, max_action_dim, max_proprio_dim)
        if tcfg.goal_relabeling:
            traj = traj_transforms.relabel_uniform_future_goal(traj, goal_seed, cameras)
        else:
            traj = traj_transforms.add_empty_goals(traj, cameras)
        # Before windowing: a dropped goal resets task.timestep, which chunk masking reads.
        if config.train and (tcfg.language_only_prob > 0 or tcfg.goal_only_prob > 0):
            traj = traj_transforms.drop_task_conditioning(
                traj,
                task_seed,
                language_only=tcfg.language_only_prob,
                goal_only=tcfg.goal_only_prob,
            )
        traj = traj_transforms.window_and_chunk(
            traj,
            tcfg.window,
            tcfg.action_horizon,
            mask_past_goal=tcfg.goal_relabeling and tcfg.mask_actions_past_goal,
        )
        # Last: the steps above read the episode end as T - 1.
        if config.train and tcfg.subsample_length is not None:
            traj = traj_transforms.subsample(traj, tcfg.subsample_length, subsample_seed)
        return traj

    return transform


def _with_maps(transform, maps: dict, traj: dict, seed: tf.Tensor) -> dict:
    """``transform(traj, seed, maps)``, the maps made constants of the calling dataset's map."""
    return transform(traj, seed, as_constants(maps))


def _frame_transform(config: DataConfig):
    def transform(frame: dict, seed: tf.Tensor) -> dict:
        augment_seed, dropout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        # Dropout first, on the encoded strings: dropped cameras are then never decoded.
        if config.train and config.frame.image_dropout_prob > 0:
            frame = frame_transforms.dropout_cameras(
                frame,
                dropout_seed,
                config.frame.image_dropout_prob,
                config.frame.image_dropout_keep,
            )
        frame = frame_transforms.transform_frame(
            frame, augment_seed, config.frame.cameras, train=config.train
        )
        # Bookkeeping for error messages; the model does not need it.
        frame = dict(frame)
        frame.pop(schema.EPISODE_ID)
        frame.pop(schema.EPISODE_INDEX)
        return frame

    return transform


def _common_dims(config: DataConfig, element_specs: list[dict]) -> tuple[int, int]:
    """The action / proprio dims every dataset is padded to (the config's, or the largest)."""
    widths = [element_widths(spec) for spec in element_specs]
    return padded_widths(config, [w[0] for w in widths], [w[1] for w in widths])


def padded_widths(
    config: DataConfig, action_widths: list[int], proprio_widths: list[int]
) -> tuple[int, int]:
    """The action / proprio widths a mixture of datasets of these standardized widths is padded
    to: the config's (``trajectory.max_*_dim``), or the widest."""
    action_dim = config.trajectory.max_action_dim or max(action_widths)
    proprio_dim = config.trajectory.max_proprio_dim
    proprio_dim = max(proprio_widths) if proprio_dim is None else proprio_dim
    return action_dim, proprio_dim


@dataclasses.dataclass
class Pipeline:
    """Batches for this process plus what a checkpoint must remember about the data."""

    dataset: tf.data.Dataset
    statistics: dict[str, DatasetStatistics]
    weights: dict[str, float]
    per_process_batch_size: int
    action_dim: int
    proprio_dim: int
    skipped: SkippedEpisodes
    # Names the image that failed to decode (dataset, episode, step, camera), for the error.
    locate: Callable[[], str | None] | None = None

    def __iter__(self):
        """Batches as numpy; a failure in tf.data is raised as `DataError` naming the data.

        tf.data starts producing (in its own threads) when this is called, not at the first
        `next`: a run initializes its model and compiles its step meanwhile.
        """
        return self._batches(self.dataset.as_numpy_iterator())

    def example_batch(self) -> dict:
        """Zeros (empty strings) with the structure, shapes and dtypes of every batch: what the
        model is initialized and the step compiled for before the first batch is read."""
        return tf.nest.map_structure(
            lambda spec: np.full(
                spec.shape, b"" if spec.dtype == tf.string else 0, spec.dtype.as_numpy_dtype
            ),
            self.dataset.element_spec,
        )

    def _batches(self, iterator):
        while True:
            with data_errors(self.locate):
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
            yield batch


def make_pipeline(
    config: DataConfig,
    shard: rlds.ProcessShard = rlds.ProcessShard(),
    *,
    split: str | None = None,
    prepared: list[PreparedDataset] | None = None,
    sample_seed: int | None = None,
) -> Pipeline:
    """Batches (schema stage 5) of this process's share of the mixture.

    `split` overrides every source's split (e.g. ``"val"`` for held-out loss) while keeping the
    prepared statistics; `prepared` reuses already opened datasets and statistics.
    `sample_seed`, for a pass that does not train (``config.train`` False: one pass, no
    augmentation): its files, episodes and frames are shuffled with this seed (frames through
    ``config.shuffle_buffer``) instead of read in order. Its first batches are then a sample
    of the whole split, the same whatever the run's seed; in order, they hold only the first
    frames of the first episodes read (validation reads ``eval_batches`` of them).
    """
    if sample_seed is not None and config.train:
        raise ValueError("sample_seed is for a pass that does not train (config.train=False)")
    shuffled = config.train or sample_seed is not None
    prepared = prepared or [prepare_dataset(source, config) for source in config.datasets]
    batch_size = config.per_process_batch_size(shard.count)
    weights = np.array([p.source.weight for p in prepared], np.float64)
    if config.balance_by_size:
        weights *= [p.statistics.num_transitions for p in prepared]
    weights /= weights.sum()
    skipped = SkippedEpisodes()
    seed = (config.seed if sample_seed is None else sample_seed) + 1000 * shard.index
    trajectories = []
    for index, (dataset, weight) in enumerate(zip(prepared, weights, strict=True)):
        share = config.parallelism.scaled(weight) if len(prepared) > 1 else config.parallelism
        trajectories.append(
            standardized_trajectories(
                dataset.builder,
                dataset.spec,
                split or dataset.source.split,
                config.cameras,
                shard=shard,
                shuffle=shuffled,
                repeat=config.train,
                cache=config.cache_trajectories,
                seed=seed + index,
                parallelism=share,
                skip_bad_episodes=config.skip_bad_episodes,
                skipped=skipped,
            )
        )
    dims = _common_dims(config, [t.dataset.element_spec for t in trajectories])
    frames = []
    transform = _trajectory_transform(config, dims)
    for index, (dataset, trajs) in enumerate(zip(prepared, trajectories, strict=True)):
        maps = normalization_maps(
            dataset.statistics, config.normalization, dataset.spec.action_normalization_mask
        )
        normalized = functools.partial(_with_maps, transform, maps)
        frames.append(trajs.map_seeded(normalized, seed + index, _SALT_TRAJECTORY).flatten())
    if len(frames) == 1:
        mixed = frames[0].dataset
    else:
        mixed = tf.data.Dataset.sample_from_datasets(
            [f.dataset for f in frames], weights=weights.tolist(), seed=seed
        )
    stream = FrameDataset(mixed, "mixture", config.parallelism)
    if shuffled:
        stream = stream.shuffle(config.shuffle_buffer, seed=seed)
    stream = stream.map_seeded(_frame_transform(config), seed, _SALT_FRAME)
    batches = stream.dataset.batch(
        batch_size,
        drop_remainder=True,  # fixed shapes: one compiled step, global arrays of known size
        num_parallel_calls=config.parallelism.frame,
        deterministic=True,
    ).prefetch(2)
    batches = apply_options(batches, config.parallelism)
    return Pipeline(
        dataset=batches,
        statistics={p.spec.name: p.statistics for p in prepared},
        weights={p.spec.name: float(w) for p, w in zip(prepared, weights, strict=True)},
        per_process_batch_size=batch_size,
        action_dim=dims[0],
        proprio_dim=dims[1],
        skipped=skipped,
        locate=functools.partial(_locate, prepared, split, config.cameras),
    )


def _locate(prepared: list[PreparedDataset], split: str | None, cameras) -> str | None:
    sources = [(p.builder, p.spec, split or p.source.split) for p in prepared]
    return raw_checks.describe_undecodable(sources, cameras)

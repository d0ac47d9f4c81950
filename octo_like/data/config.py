"""Typed, validated configuration of the input pipeline.

These frozen dataclasses are what library code takes; `octo_like.config` builds them from locked
ml_collections configs at the entry points, so a typo'd key fails before any data is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from octo_like.data.dataset import Parallelism
from octo_like.data.frame_transforms import AugmentConfig, CameraTransform
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.normalization import NormalizationType

__all__ = [
    "AugmentConfig",
    "CameraTransform",
    "DataConfig",
    "DatasetSource",
    "FrameTransformConfig",
    "NormalizationType",
    "Parallelism",
    "TrajectoryTransformConfig",
]


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """One dataset of a mixture: its registry name, where it lives and its sampling weight.

    `location` is a prepared TFDS directory (``.../name/1.0.0``) or a TFDS data root that holds
    ``name/<version>``; `split` may use TFDS slicing (``train[:90%]``).
    """

    name: str
    location: str
    weight: float = 1.0
    split: str = "train"

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"dataset {self.name!r}: weight must be > 0, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class TrajectoryTransformConfig:
    """History window, action chunking and the task-side transforms (see traj_transforms)."""

    window: int = 2
    action_horizon: int = 4
    goal_relabeling: bool = False
    mask_actions_past_goal: bool = True
    subsample_length: int | None = None
    language_only_prob: float = 0.0
    goal_only_prob: float = 0.0
    max_action_dim: int | None = None
    max_proprio_dim: int | None = None

    def __post_init__(self):
        if self.window < 1 or self.action_horizon < 1:
            raise ValueError("window and action_horizon must be >= 1")
        if not 0 <= self.language_only_prob + self.goal_only_prob <= 1:
            raise ValueError("language_only_prob + goal_only_prob must lie in [0, 1]")
        if self.subsample_length is not None and self.subsample_length < 1:
            raise ValueError("subsample_length must be >= 1 or None")


@dataclasses.dataclass(frozen=True)
class FrameTransformConfig:
    """Cameras in the order the model sees them, each with its size and augmentation."""

    cameras: Mapping[str, CameraTransform] = dataclasses.field(
        default_factory=lambda: {"primary": CameraTransform(size=(256, 256))}
    )
    image_dropout_prob: float = 0.0
    image_dropout_keep: str | None = None

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("at least one camera must be configured")
        if self.image_dropout_keep is not None and self.image_dropout_keep not in self.cameras:
            raise ValueError(
                f"image_dropout_keep {self.image_dropout_keep!r} is not a configured camera "
                f"({list(self.cameras)})"
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that decides which batches a run sees."""

    datasets: tuple[DatasetSource, ...]
    batch_size: int = 32
    train: bool = True
    seed: int = 0
    shuffle_buffer: int = 10_000
    balance_by_size: bool = False
    normalization: NormalizationType = NormalizationType.NORMAL
    statistics_cache_dir: str = "~/.cache/octo_like/statistics"
    # The split each dataset's normalization statistics are computed over: None, the split it
    # trains on; or a TFDS split such as "all" (every split, as Octo computes them).
    statistics_split: str | None = None
    skip_bad_episodes: bool = False
    cache_trajectories: bool = False
    trajectory: TrajectoryTransformConfig = TrajectoryTransformConfig()
    frame: FrameTransformConfig = FrameTransformConfig()
    parallelism: Parallelism = Parallelism()
    extra_specs: Mapping[str, DatasetSpec] = dataclasses.field(default_factory=dict)
    # {dataset name: DatasetStatistics.to_dict()}: normalize that dataset with these statistics
    # instead of its own, e.g. fine-tuning that keeps the pretrained model's normalization of
    # the same robot (finetune's ``statistics_from``), so reused weights see inputs as before.
    fixed_statistics: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("DataConfig.datasets is empty")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"a dataset appears twice in the mixture: {names}")
        strangers = sorted(set(self.fixed_statistics) - set(names))
        if strangers:
            raise ValueError(
                f"fixed_statistics names dataset(s) {strangers} not in the mixture ({names})"
            )
        if self.statistics_split is not None and not self.statistics_split.strip():
            raise ValueError(
                "statistics_split is empty: None (each dataset's training split) or a TFDS "
                "split such as 'all'"
            )
        if self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError("batch_size and shuffle_buffer must be >= 1")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.frame.cameras)

    def per_process_batch_size(self, process_count: int) -> int:
        """The global batch split evenly over processes (the config itself is never changed)."""
        if self.batch_size % process_count:
            raise ValueError(
                f"global batch size {self.batch_size} is not divisible by the "
                f"{process_count} processes"
            )
        return self.batch_size // process_count

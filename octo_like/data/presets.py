"""Ready-made pipeline configurations used by scripts, tests and debug configs."""

from __future__ import annotations

import dataclasses

from octo_like.data.config import (
    AugmentConfig,
    CameraTransform,
    DataConfig,
    DatasetSource,
    FrameTransformConfig,
    TrajectoryTransformConfig,
)
from octo_like.data.dataset import Parallelism

# Octo-style pretraining augmentation of the primary camera (random resized crop + colour).
PRIMARY_AUGMENT = AugmentConfig(
    random_resized_crop_scale=(0.8, 1.0),
    random_resized_crop_ratio=(0.9, 1.1),
    brightness=0.1,
    contrast=(0.9, 1.1),
    saturation=(0.9, 1.1),
    hue=0.05,
)
# Wrist cameras move with the gripper; cropping them loses the object, so colour only.
WRIST_AUGMENT = dataclasses.replace(PRIMARY_AUGMENT, random_resized_crop_scale=None)


def octo_cameras(
    primary_size: int = 256, wrist_size: int = 128, augment: bool = True
) -> dict[str, CameraTransform]:
    """Octo's camera layout: a primary third-person camera and a wrist camera."""
    return {
        "primary": CameraTransform(
            size=(primary_size, primary_size), augment=PRIMARY_AUGMENT if augment else None
        ),
        "wrist": CameraTransform(
            size=(wrist_size, wrist_size), augment=WRIST_AUGMENT if augment else None
        ),
    }


def single_dataset_config(
    location: str,
    name: str,
    *,
    batch_size: int = 32,
    window: int = 2,
    action_horizon: int = 4,
    primary_size: int = 256,
    wrist_size: int = 128,
    augment: bool = True,
    train: bool = True,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    cache_trajectories: bool = False,
    statistics_cache_dir: str = "~/.cache/octo_like/statistics",
    parallelism: Parallelism = Parallelism(),
    **overrides,
) -> DataConfig:
    """One dataset with Octo's window / chunk / camera defaults; `overrides` go to DataConfig."""
    return DataConfig(
        datasets=(DatasetSource(name=name, location=location),),
        batch_size=batch_size,
        train=train,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        cache_trajectories=cache_trajectories,
        statistics_cache_dir=statistics_cache_dir,
        trajectory=TrajectoryTransformConfig(window=window, action_horizon=action_horizon),
        frame=FrameTransformConfig(cameras=octo_cameras(primary_size, wrist_size, augment)),
        parallelism=parallelism,
        **overrides,
    )

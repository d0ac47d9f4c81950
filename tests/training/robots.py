"""A new robot's dataset to fine-tune to: cameras, joint proprio and actions in units far from
the pretraining data's. The fine-tuning tests (tests/training/test_finetune.py from this
project's pretraining, tests/training/test_finetune_octo.py from an imported Octo checkpoint)
each write theirs with it, at their own cameras, dimensions and sizes."""

from __future__ import annotations

import numpy as np


def write_robot_dataset(
    data_dir: str,
    name: str,
    *,
    cameras: dict[str, tuple[int, int]],
    proprio_dim: int,
    offset: np.ndarray,
    gripper: bool,
    episodes: dict[str, int],
    episode_length: tuple[int, int],
) -> str:
    """Writes RLDS dataset `name` under `data_dir` and returns its version directory.

    Observations: each of `cameras` (key -> (height, width)) as an RGB image and `joints`
    ([proprio_dim] float32); steps: a language instruction and an action of len(offset) dims
    (+1 with `gripper`). The first len(offset) action dims lie around `offset` [len(offset)];
    with `gripper` the last is binary: 1 over the first half of each episode, then 0.
    `episodes`: episodes per split; `episode_length`: inclusive (min, max).
    """
    from octo_like.data.rlds_writer import RldsSchema, image, tensor, text
    from octo_like.data.synthetic import write_rlds_dataset

    moved = len(offset)

    def offset_actions(split, index, episode):
        action = episode["steps"]["action"]
        action[:, :moved] = offset + 0.5 * action[:, :moved]
        if gripper:
            action[:, moved] = np.arange(len(action)) < len(action) // 2

    observation = {key: image(*size) for key, size in cameras.items()}
    schema = RldsSchema(
        observation={**observation, "joints": tensor((proprio_dim,))},
        step={"action": tensor((moved + int(gripper),)), "language_instruction": text()},
    )
    return write_rlds_dataset(
        data_dir, name, schema, episodes=episodes, episode_length=episode_length,
        override=offset_actions,
    )  # fmt: skip


def two_step_run(config, *, stats_dir: str, shuffle_buffer: int) -> None:
    """A fine-tuning config set to the tests' short run: batch 8 (one example per fake device),
    2 steps logged each, one checkpoint at the end, no validation, one warm-up step."""
    config.data.batch_size = 8
    config.data.shuffle_buffer = shuffle_buffer
    config.data.statistics_cache_dir = stats_dir
    config.num_steps = 2
    config.log_every = 1
    config.val_split = ""
    config.checkpoint.save_every = 2
    config.optimizer.warmup_steps = 1
    config.tensorboard = False

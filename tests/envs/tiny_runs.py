"""A simulated pretraining preset shrunk to seconds, shared by the fixtures that train one."""

from __future__ import annotations

import pathlib


def shrink_to_seconds(config, tmp: pathlib.Path, tasks: str) -> None:
    """2 steps of the dummy transformer at batch 8 on 2 demonstrations of each of `tasks`,
    statistics and demonstrations cached under `tmp`."""
    config.num_steps, config.log_every, config.eval_every = 2, 1, 2
    config.checkpoint.save_every = 2
    config.optimizer.warmup_steps = 1
    config.tensorboard = False
    config.model.transformer = "dummy"
    config.data.batch_size = 8
    config.data.statistics_cache_dir = str(tmp / "stats")
    config.simulation.tasks = tasks
    config.simulation.episodes_per_task = 2
    config.simulation.cache_dir = str(tmp / "cache")

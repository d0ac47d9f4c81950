"""What the training loop evaluates while it trains, and how (`loop.run` calls these).

Validation: every `eval_every` steps (and at the end) `evaluate_held_out` logs, under ``val/``,
the mean loss of `eval_batches` held-out batches and, on the same batches, Octo's sampled-action
metrics (`action_metrics.py`: ``sampled_mse``, ``xyz_angle``, ``xyz_accuracy``,
``gripping_accuracy``; ``eval_action_samples``).
Closed loop: a `ClosedLoopEval` (e.g. `envs.training_eval`, which the training layer cannot
import) rolls the model being trained out every ``every`` steps; its metrics go under ``sim/``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import jax
import numpy as np

from octo_like.data.pipeline import make_pipeline
from octo_like.model.octo_model import OctoModel
from octo_like.training.run import action_metrics

log = logging.getLogger(__name__)

# Validation shuffles the held-out split with this seed, not the run's: every evaluation of every
# run (seeds, commits, resumes) reads the same sample of it, so their losses compare.
HELD_OUT_SAMPLE_SEED = 0


class ClosedLoopEval(Protocol):
    """Closed-loop success of the model being trained (e.g. `envs.training_eval`)."""

    every: int

    def __call__(self, step: int, model: OctoModel) -> dict[str, float]: ...


def evaluate_held_out(
    eval_step, state, val_config, shard, held_out, config, to_device, sample_step=None
) -> dict:
    """Mean metrics over `eval_batches` batches of `held_out` (the prepared datasets reading
    their held-out splits: `RunSplits.held_out`), a sample of the whole split shuffled with
    `HELD_OUT_SAMPLE_SEED` (all of it when it holds fewer frames); {} when a dataset has no
    such split. With a `sample_step`, also Octo's sampled-action metrics on the same batches,
    pooled over them."""
    try:
        pipeline = make_pipeline(
            val_config, shard, prepared=held_out, sample_seed=HELD_OUT_SAMPLE_SEED
        )
    except ValueError as error:
        log.warning("no validation: %s", error)
        return {}
    results, sampled = [], []
    for index, batch in zip(range(config.eval_batches), pipeline, strict=False):
        device_batch = to_device(batch)
        results.append(jax.device_get(eval_step(state, device_batch)))
        if sample_step is not None:
            sampled.append(jax.device_get(sample_step(state, device_batch, np.int32(index))))
    if not results:
        return {}
    means = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    return {**means, **action_metrics.pooled(sampled)}

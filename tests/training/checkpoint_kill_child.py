"""Child of test_crash_resume.py: saves steps 1, 2, ... of a ~8 MB train state (async, every
step) until it is killed; prints ``saved N`` once each save has started."""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np

from octo_like.model.config import LanguageConfig, ModelConfig
from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer


def state_at(step: int) -> dict:
    """What step `step` saves: every value derived from the step, so a restore is checkable."""
    base = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    return {"step": jnp.int32(step), "w": jnp.asarray(base + step), "b": jnp.full(7, step, float)}


def main(directory: str) -> None:
    meta = {
        "model_config": ModelConfig(language=LanguageConfig(encoder="none")).to_dict(),
        "dataset_statistics": {},
        "input_spec": {"observation": {}, "task": {}},
    }
    with Checkpointer(directory, CheckpointConfig(save_every=1, keep_last=50)) as checkpointer:
        for step in range(1, 1000):
            state = state_at(step)
            checkpointer.save(step, state, params={"w": state["w"]}, **meta)
            print(f"saved {step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

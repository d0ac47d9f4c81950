"""The global batch a train step receives, as shapes and dtypes only, from the config alone.

The compile check builds the exact train program for a pod without reading a byte of data; this
is the batch layout the training loop feeds it (`octo_like/schema.py`, stage 5, after host-side
tokenization, strings dropped). A test holds it equal to a real pipeline batch.
"""

from __future__ import annotations

import jax
import numpy as np

from octo_like import schema
from octo_like.config.typed import ConfigError
from octo_like.training.config import TrainConfig


def abstract_batch(
    config: TrainConfig,
    *,
    proprio_dim: int | None = None,
    batch_size: int | None = None,
    action_dim: int | None = None,
) -> dict:
    """`jax.ShapeDtypeStruct` leaves of one global batch (default size: the config's).

    `proprio_dim`: the padded proprio width P the mix would give (the data decides it at run
    time); default ``data.trajectory.max_proprio_dim``. Required when the model reads proprio;
    otherwise the unread input defaults to 8 (its size is a few kB). `action_dim`: the padded
    action width the mix gives; default ``data.trajectory.max_action_dim``, else the model's.
    """
    b = config.data.batch_size if batch_size is None else batch_size
    trajectory = config.data.trajectory
    w, h = trajectory.window, trajectory.action_horizon
    if action_dim is None:
        action_dim = trajectory.max_action_dim or config.model.action_dim
    if proprio_dim is None:
        proprio_dim = trajectory.max_proprio_dim
    if proprio_dim is None:
        if config.model.proprio is not None:
            raise ConfigError(
                "the model reads proprio, whose width the data decides: set "
                "data.trajectory.max_proprio_dim (or pass proprio_dim)"
            )
        proprio_dim = 8

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))

    observation, task = {}, {}
    observation_masks, task_masks = {}, {}
    for camera, transform in config.data.frame.cameras.items():
        if transform.size is None:
            raise ConfigError(
                f"camera {camera!r} keeps each dataset's own image size; give "
                f"data.frame.cameras.{camera}.size to compile for a fixed shape"
            )
        key = schema.image_key(camera)
        observation[key] = spec((b, w, *transform.size, 3), np.uint8)
        observation_masks[key] = spec((b, w), bool)
        task[key] = spec((b, *transform.size, 3), np.uint8)
        task_masks[key] = spec((b,), bool)
    observation[schema.PROPRIO] = spec((b, w, proprio_dim), np.float32)
    observation[schema.PROPRIO_PAD_MASK] = spec((b, w, proprio_dim), bool)
    observation_masks[schema.PROPRIO] = spec((b, w), bool)
    observation[schema.TIMESTEP] = spec((b, w), np.int32)
    observation[schema.TIMESTEP_PAD_MASK] = spec((b, w), bool)
    observation[schema.PAD_MASK_DICT] = observation_masks
    task_masks[schema.LANGUAGE] = spec((b,), bool)
    task[schema.TIMESTEP] = spec((b,), np.int32)
    if config.model.language.encoder != "none":
        length = config.model.language.max_length
        task["language_tokens"] = spec((b, length), np.int32)
        task["language_mask"] = spec((b, length), bool)
    task[schema.PAD_MASK_DICT] = task_masks
    return {
        "observation": observation,
        "task": task,
        schema.ACTION: spec((b, w, h, action_dim), np.float32),
        schema.ACTION_PAD_MASK: spec((b, w, h, action_dim), bool),
    }


def with_sharding(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """The same leaves, each carrying `sharding` (the batch axis split over the mesh)."""
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), batch
    )

"""Write tiny RLDS datasets in TFDS format for any feature schema, in seconds.

Tests and debug configs use these instead of downloads. A schema names the per-step observation
features, the other per-step features (action, language, ...) and the episode metadata; the writer
fills them with smooth, deterministic values (images show a moving square, so frames differ) and
lets a caller override any episode, e.g. to inject NaN actions or undecodable images.

Example::

    schema = RldsSchema(observation={"image_0": image(64, 64), "state": tensor((7,))})
    path = write_rlds_dataset(tmp_dir, "toy", schema, episodes={"train": 4}, episode_length=10)
    tfds.builder_from_directory(path)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from octo_like.data.rlds_writer import (  # noqa: F401  (re-exported for existing callers)
    Feature,
    RldsSchema,
    complete_step_columns,
    image,
    scalar,
    tensor,
    text,
    write_episodes,
)

DEFAULT_INSTRUCTIONS = (
    "pick up the red block",
    "open the drawer",
    "push the puck to the goal",
    "press the button from the top",
    "put the cup into the sink",
)


EpisodeOverride = Callable[[str, int, dict[str, Any]], dict[str, Any] | None]


def _fake_image(rng: np.random.Generator, length: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8[T, h, w, c]: a coloured background with a square that moves over time."""
    height, width, channels = shape
    background = rng.integers(40, 200, size=(channels,), dtype=np.int64)
    frames = np.broadcast_to(background, (length, height, width, channels)).copy()
    side = max(2, min(height, width) // 4)
    start = rng.integers(0, [max(1, height - side), max(1, width - side)])
    velocity = rng.integers(-2, 3, size=2)
    colour = rng.integers(0, 256, size=(channels,))
    for t in range(length):
        y, x = np.clip(start + velocity * t, 0, [height - side, width - side])
        frames[t, y : y + side, x : x + side] = colour
    return frames.astype(np.uint8)


def _fake_value(rng: np.random.Generator, feature: Feature, length: int, instruction: str):
    if isinstance(feature, Mapping):  # nested features, e.g. a dict action
        return {k: _fake_value(rng, f, length, instruction) for k, f in feature.items()}
    if feature.kind == "image":
        return _fake_image(rng, length, feature.shape)
    if feature.kind == "text":
        return [instruction] * length
    dtype = np.dtype(feature.dtype)
    shape = (length, *feature.shape)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    # A random walk: smooth like real states, with per-dimension scales.
    steps = rng.normal(0.0, 0.1, size=shape)
    return np.cumsum(steps, axis=0).astype(dtype)


def make_episode(
    schema: RldsSchema, rng: np.random.Generator, length: int, instruction: str
) -> dict[str, Any]:
    """One episode as columns: ``{"steps": {key: [T, ...]}, "episode_metadata": {...}}``."""
    steps: dict[str, Any] = {
        k: _fake_value(rng, f, length, instruction) for k, f in schema.step.items()
    }
    steps["observation"] = {
        k: _fake_value(rng, f, length, instruction) for k, f in schema.observation.items()
    }
    complete_step_columns(steps, length)
    metadata = {
        k: _fake_value(rng, f, 1, instruction)[0] for k, f in schema.episode_metadata.items()
    }
    return {"steps": steps, "episode_metadata": metadata}


def write_rlds_dataset(
    data_dir: str,
    name: str,
    schema: RldsSchema,
    *,
    episodes: Mapping[str, int] | None = None,
    episode_length: int | tuple[int, int] = 10,
    seed: int = 0,
    instructions: tuple[str, ...] = DEFAULT_INSTRUCTIONS,
    override: EpisodeOverride | None = None,
    version: str = "1.0.0",
) -> str:
    """Writes `name` under `data_dir` and returns the version directory to open it from.

    Args:
      episodes: episodes per split, default ``{"train": 4, "val": 2}``.
      episode_length: a fixed length or an inclusive ``(min, max)`` range.
      override: called as ``override(split, episode_index, episode)``; may edit the episode's
        columns in place or return a replacement. An episode whose ``steps`` columns are empty
        (length 0) is written as a zero-length episode.
    """
    episodes = dict(episodes or {"train": 4, "val": 2})

    def generate(split: str):
        rng = np.random.default_rng([seed, sorted(episodes).index(split)])
        for index in range(episodes[split]):
            if isinstance(episode_length, int):
                length = episode_length
            else:
                length = int(rng.integers(episode_length[0], episode_length[1] + 1))
            instruction = instructions[index % len(instructions)]
            episode = make_episode(schema, rng, length, instruction)
            if override is not None:
                episode = override(split, index, episode) or episode
            yield episode

    splits = {split: (lambda split=split: generate(split)) for split in episodes}
    return write_episodes(data_dir, name, schema, splits, version=version)


def bridge_like_schema(image_size: int = 64, num_cameras: int = 4) -> RldsSchema:
    """The feature layout of OXE's Bridge (cameras image_0.., 7-dim state and action)."""
    return RldsSchema(
        observation={
            **{f"image_{i}": image(image_size, image_size) for i in range(num_cameras)},
            "state": tensor((7,)),
        },
        step={
            "action": tensor((7,)),
            "language_instruction": text(),
            "language_embedding": tensor((512,)),
        },
        episode_metadata={"file_path": text(), "episode_id": scalar("int32")},
    )


SYNTHETIC_BRIDGE = "synthetic_bridge"


def synthetic_bridge_spec():
    """The registry entry of `ensure_synthetic_bridge`'s dataset (Bridge-like keys)."""
    from octo_like.data.oxe.spec import DatasetSpec

    return DatasetSpec(
        name=SYNTHETIC_BRIDGE,
        image_keys={"primary": "image_0", "wrist": "image_1"},
        proprio_key="state",
        standardize="identity",
        action_normalization_mask=(True,) * 6 + (False,),
    )


def ensure_synthetic_bridge(
    data_dir: str, *, episodes: int = 48, episode_length: tuple[int, int] = (20, 40)
) -> str:
    """Writes (once) a Bridge-format dataset with train and val splits; returns its directory.

    The gripper dim is binary (closing halfway through each episode) like real Bridge data.
    """
    target = os.path.join(data_dir, SYNTHETIC_BRIDGE, "1.0.0")  # posix join keeps URLs intact
    if tf.io.gfile.exists(os.path.join(target, "dataset_info.json")):
        return target

    def binary_gripper(split, index, episode):
        length = len(episode["steps"]["is_first"])
        gripper = (np.arange(length) < length // 2).astype(np.float32)
        episode["steps"]["action"][:, -1] = gripper

    return write_rlds_dataset(
        data_dir,
        SYNTHETIC_BRIDGE,
        bridge_like_schema(image_size=64, num_cameras=2),
        episodes={"train": episodes, "val": max(2, episodes // 8)},
        episode_length=episode_length,
        override=binary_gripper,
    )

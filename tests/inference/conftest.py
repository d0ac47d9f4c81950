"""A tiny checkpoint shared by the inference tests (built once per session, in seconds).

The model pads proprio (the robot's P=5 -> 6) and actions (the robot's A=7 -> 8), as a
checkpoint trained on a mix with `max_proprio_dim` / `max_action_dim` does, so the tests see
the padding and unpadding paths.
"""

from __future__ import annotations

import numpy as np
import pytest

from octo_like.model import testing
from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
    ProprioTokenizerConfig,
)
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.normalization import ArrayStatistics

WINDOW, HORIZON = 2, 4
ROBOT_P, MODEL_P = 5, 6
ROBOT_A, MODEL_A = 7, 8
PRIMARY, WRIST = 32, 16  # image sizes the model was built for
ACTION_MEAN, ACTION_STD = 3.0, 0.5  # NORMAL statistics of the fake dataset (dims 0..5)
PROPRIO_MEAN, PROPRIO_STD = -1.0, 4.0


def statistics(dim: int, mean: float, std: float) -> dict:
    return ArrayStatistics(
        mean=np.full(dim, mean, np.float32),
        std=np.full(dim, std, np.float32),
        min=np.full(dim, mean - 3 * std, np.float32),
        max=np.full(dim, mean + 3 * std, np.float32),
        p01=np.full(dim, mean - 2 * std, np.float32),
        p99=np.full(dim, mean + 2 * std, np.float32),
    ).to_dict()


def dataset_entry() -> dict:
    stats = {
        "action": statistics(ROBOT_A, ACTION_MEAN, ACTION_STD),
        "proprio": statistics(ROBOT_P, PROPRIO_MEAN, PROPRIO_STD),
        "num_transitions": 10,
        "num_trajectories": 1,
    }
    return action_statistics_entry(stats, "normal", (True,) * 6 + (False,))


def example_batch(batch: int = 1) -> dict:
    ones = lambda *shape: np.ones(shape, bool)  # noqa: E731
    return {
        "observation": {
            "image_primary": np.zeros((batch, WINDOW, PRIMARY, PRIMARY, 3), np.uint8),
            "image_wrist": np.zeros((batch, WINDOW, WRIST, WRIST, 3), np.uint8),
            "proprio": np.zeros((batch, WINDOW, MODEL_P), np.float32),
            "proprio_pad_mask": ones(batch, WINDOW, MODEL_P),
            "timestep_pad_mask": ones(batch, WINDOW),
            "pad_mask_dict": {
                "image_primary": ones(batch, WINDOW),
                "image_wrist": ones(batch, WINDOW),
                "proprio": ones(batch, WINDOW),
            },
        },
        "task": {
            "language_instruction": np.array([b"open the drawer"] * batch, dtype=object),
            "image_primary": np.zeros((batch, PRIMARY, PRIMARY, 3), np.uint8),
            "pad_mask_dict": {"language_instruction": ones(batch), "image_primary": ones(batch)},
        },
    }


def tiny_config(language_dir: str) -> ModelConfig:
    return ModelConfig(
        transformer="dummy",
        image_tokenizers=(
            ImageTokenizerConfig("primary", num_features=16, goal_fusion=True),
            ImageTokenizerConfig("wrist", encoder="patch16", num_features=16),
        ),
        proprio=ProprioTokenizerConfig(num_features=8),
        language=LanguageConfig(encoder="small", checkpoint_dir=language_dir, small_width=16),
        goal_image_cameras=("primary",),
        window=WINDOW,
        action_horizon=HORIZON,
        action_dim=MODEL_A,
        head=HeadConfig("diffusion", {"hidden_dim": 16, "num_blocks": 1, "diffusion_steps": 3}),
    )


def host_initialized_model(config: ModelConfig) -> OctoModel:
    """The tiny model with small random weights drawn on the host (see model/testing.py)."""
    return testing.host_initialized_model(config, example_batch(), {"fake_robot": dataset_entry()})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """``<tmp>/checkpoints/3``: a tiny random model with one dataset's statistics."""
    root = tmp_path_factory.mktemp("inference")
    language = write_tiny_t5_checkpoint(str(root / "t5"))
    checkpoint = str(root / "checkpoints")
    host_initialized_model(tiny_config(language)).save_pretrained(3, checkpoint)
    return checkpoint


@pytest.fixture(scope="session")
def policy(tiny_checkpoint):
    """One loaded, warmed-up policy for the policy and server tests (receding, exec 2)."""
    from octo_like.inference import Policy

    return Policy.from_checkpoint(tiny_checkpoint, exec_horizon=2, seed=3)

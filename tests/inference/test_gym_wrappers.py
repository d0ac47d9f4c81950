"""Gym wrappers on a tiny fake env: windowed observations, chunk execution, early stop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from octo_like.inference.gym_wrappers import (
    HistoryWrapper,
    RecedingHorizonWrapper,
    TemporalEnsembleWrapper,
)

A = 2


class CountingEnv(gym.Env):
    """Observation at step t: image filled with t, proprio [t, last action[0]]; reward 1 per
    step; terminates after `length` steps. Records every action it receives."""

    def __init__(self, length: int = 10):
        self.length = length
        self.observation_space = gym.spaces.Dict(
            {
                "image_primary": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-100.0, 100.0, (A,), np.float32)
        self.actions: list[np.ndarray] = []

    def _obs(self, last: float = 0.0) -> dict:
        return {
            "image_primary": np.full((4, 4, 3), self.t, np.uint8),
            "proprio": np.array([self.t, last], np.float32),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.actions = []
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.asarray(action))
        self.t += 1
        return self._obs(float(action[0])), 1.0, self.t >= self.length, False, {"t": self.t}


def chunk(start: float, horizon: int = 4) -> np.ndarray:
    rows = start + np.arange(horizon, dtype=np.float32)
    return np.stack([rows, 2 * rows], axis=1)


def test_history_wrapper_windows_and_masks():
    env = HistoryWrapper(CountingEnv(), window=3)
    obs, _ = env.reset(seed=0)
    assert obs["image_primary"].shape == (3, 4, 4, 3)
    assert obs["timestep_pad_mask"].tolist() == [False, False, True]
    assert obs["pad_mask_dict"]["proprio"].tolist() == [False, False, True]
    assert env.observation_space.contains(obs)
    for _ in range(2):
        obs, *_ = env.step(np.zeros(A, np.float32))
    assert obs["proprio"][:, 0].tolist() == [0.0, 1.0, 2.0]
    assert obs["timestep_pad_mask"].all()
    obs, _ = env.reset()
    assert obs["timestep_pad_mask"].tolist() == [False, False, True]  # history was reset
    with pytest.raises(TypeError, match="Dict observation space"):
        HistoryWrapper(gym.make("CartPole-v1"), window=2)


def test_receding_horizon_wrapper_executes_exec_horizon_actions_and_sums_rewards():
    inner = CountingEnv()
    env = RecedingHorizonWrapper(HistoryWrapper(inner, window=2), exec_horizon=3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(chunk(10.0))
    np.testing.assert_array_equal(np.stack(inner.actions), chunk(10.0)[:3])
    assert (reward, terminated, truncated, info["num_executed"]) == (3.0, False, False, 3)
    assert obs["proprio"][:, 0].tolist() == [2.0, 3.0]  # every executed step entered history
    assert env.action_space.shape == (3, A)
    with pytest.raises(ValueError, match="fewer than exec_horizon=3"):
        env.step(chunk(0.0, horizon=2))


def test_receding_horizon_wrapper_stops_at_termination():
    inner = CountingEnv(length=2)
    env = RecedingHorizonWrapper(inner, exec_horizon=4)
    env.reset()
    _, reward, terminated, _, info = env.step(chunk(0.0))
    assert terminated and reward == 2.0 and info["num_executed"] == 2
    assert len(inner.actions) == 2


def test_temporal_ensemble_wrapper_executes_the_ensembled_action():
    inner = CountingEnv()
    env = TemporalEnsembleWrapper(inner, action_horizon=4)
    env.reset()
    env.step(chunk(0.0))  # executes row 0 of chunk 0: 0
    env.step(chunk(10.0))  # mean of chunk 0 row 1 (1) and chunk 1 row 0 (10)
    _, _, _, _, info = env.step(chunk(20.0))  # mean of 2, 11, 20
    executed = [a[0] for a in inner.actions]
    np.testing.assert_allclose(executed, [0.0, 5.5, 11.0], rtol=1e-6)
    np.testing.assert_allclose(info["executed_action"], [11.0, 22.0], rtol=1e-6)
    env.reset()
    env.step(chunk(7.0))
    assert inner.actions[-1][0] == 7.0  # the ensemble was reset with the episode
    assert env.action_space.shape == (4, A)

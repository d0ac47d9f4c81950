"""Gymnasium wrappers that give a dict-observation env the policy's interface.

    env = HistoryWrapper(env, window=2)                  # obs: {key: [W, ...]} + masks
    env = RecedingHorizonWrapper(env, exec_horizon=4)    # step(chunk float32[H, A])
    obs, info = env.reset(seed=0)
    chunk = policy.predict_chunks(add_batch_axis(obs), "open the drawer")[0]
    obs, reward, terminated, truncated, info = env.step(chunk)

Stack `HistoryWrapper` innermost, so every executed step (not only every chunk) enters the
history. The chunk wrappers reuse the executors of `execution.py`, so a policy behaves the same
in simulation and in `Policy.step` on a robot.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from octo_like.inference.execution import RecedingHorizon, TemporalEnsembler
from octo_like.inference.history import ObservationHistory
from octo_like.schema import PAD_MASK_DICT, TIMESTEP_PAD_MASK


def _mask_space(window: int) -> gym.spaces.Box:
    return gym.spaces.Box(0, 1, (window,), bool)


def _tile_box(space: gym.spaces.Space, count: int, what: str) -> gym.spaces.Box:
    """Box[...] -> Box[count, ...] with the same bounds per slot."""
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"{what}: expected a Box space, got {space}")
    return gym.spaces.Box(
        np.broadcast_to(space.low, (count, *space.shape)),
        np.broadcast_to(space.high, (count, *space.shape)),
        (count, *space.shape),
        space.dtype,
    )


class HistoryWrapper(gym.Wrapper):
    """Observations become windows: ``{key: [W, ...], timestep_pad_mask: bool[W],
    pad_mask_dict: {key: bool[W]}}`` (see `ObservationHistory` for the padding)."""

    def __init__(self, env: gym.Env, window: int):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise TypeError(
                f"HistoryWrapper needs a Dict observation space ({{key: Box}}), got {space}"
            )
        self.history = ObservationHistory(window)
        stacked = {k: _tile_box(s, window, f"observation {k!r}") for k, s in space.items()}
        self.observation_space = gym.spaces.Dict(
            {
                **stacked,
                TIMESTEP_PAD_MASK: _mask_space(window),
                PAD_MASK_DICT: gym.spaces.Dict({k: _mask_space(window) for k in space}),
            }
        )

    def reset(self, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.history.reset()
        return self.history.push(obs), info

    def step(self, action) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.history.push(obs), reward, terminated, truncated, info


class RecedingHorizonWrapper(gym.Wrapper):
    """`step` takes a chunk float32[H, A] (H >= exec_horizon), executes its first
    `exec_horizon` actions, and returns the last observation, the summed reward and the last
    info (with ``num_executed``). It stops early when the episode terminates or truncates.

    `action_horizon` (default `exec_horizon`) only sets the chunk length of `action_space`.
    """

    def __init__(self, env: gym.Env, exec_horizon: int, *, action_horizon: int | None = None):
        super().__init__(env)
        self.executor = RecedingHorizon(exec_horizon)
        self.exec_horizon = exec_horizon
        horizon = exec_horizon if action_horizon is None else action_horizon
        if horizon < exec_horizon:
            raise ValueError(f"action_horizon={horizon} < exec_horizon={exec_horizon}")
        self.action_space = _tile_box(env.action_space, horizon, "RecedingHorizonWrapper")

    def reset(self, **kwargs):
        self.executor.reset()
        return self.env.reset(**kwargs)

    def step(self, action):
        self.executor.set_chunk(action)
        total, executed = 0.0, 0
        while not self.executor.needs_chunk():
            obs, reward, terminated, truncated, info = self.env.step(self.executor.next_action())
            total += float(reward)
            executed += 1
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "num_executed": executed}


class TemporalEnsembleWrapper(gym.Wrapper):
    """`step` takes a chunk float32[action_horizon, A] every step and executes the
    temporally ensembled action (see `TemporalEnsembler` for the weights)."""

    def __init__(self, env: gym.Env, action_horizon: int, decay: float = 0.0):
        super().__init__(env)
        self.ensembler = TemporalEnsembler(action_horizon, decay)
        self.action_space = _tile_box(env.action_space, action_horizon, "TemporalEnsembleWrapper")

    def reset(self, **kwargs):
        self.ensembler.reset()
        return self.env.reset(**kwargs)

    def step(self, action):
        self.ensembler.set_chunk(action)
        executed = self.ensembler.next_action()
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}

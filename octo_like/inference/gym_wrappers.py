"""Gymnasium wrappers that give a dict-observation env the policy's interface.

    env = HistoryWrapper(env, window=2)                  # obs: {key: [W, ...]} + masks
    env = RecedingHorizonWrapper(env, exec_horizon=4)    # step(chunk float32[H, A])
    obs, info = env.reset(seed=0)
    chunk = policy.predict_chunks(add_batch_axis(obs), "open the drawer")[0]
    obs, reward, terminated, truncated, info = env.step(chunk)

Stack `HistoryWrapper` innermost, so every executed step (not only every chunk) enters the
history. The chunk wrappers reuse the executors of `execution.py`, so a policy behaves the same
in simulation and in `Policy.step` on a robot.

Octo's names and call forms (octo/utils/gym_wrappers.py) for its evaluation examples, with
`OctoModel.sample_actions` (which takes proprio already normalized):

    env = NormalizeProprio(env, model.dataset_statistics)  # raw proprio -> the model's units
    env = HistoryWrapper(env, horizon=1)
    env = RHCWrapper(env, exec_horizon=4)                  # info["observations"], ["rewards"]
    # or TemporalEnsembleWrapper(env, pred_horizon=4, exp_weight=0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from octo_like.inference.execution import RecedingHorizon, TemporalEnsembler
from octo_like.inference.history import ObservationHistory
from octo_like.model.octo_inputs import StatisticsByDataset
from octo_like.normalization import ArrayStatistics, normalize_np
from octo_like.schema import PAD_MASK_DICT, PROPRIO, TIMESTEP_PAD_MASK


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


class _ForwardsAttributes:
    """A public attribute the wrapper lacks is read from the wrapped env, as gym's wrappers did
    (Octo's examples/03 calls ``env.get_task()`` through its wrappers); gymnasium 1.x's do not
    (their ``get_wrapper_attr(name)`` does)."""

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "env":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.env, name)


class HistoryWrapper(_ForwardsAttributes, gym.Wrapper):
    """Observations become windows: ``{key: [W, ...], timestep_pad_mask: bool[W],
    pad_mask_dict: {key: bool[W]}}`` (see `ObservationHistory` for the padding).

    ``horizon=`` is Octo's name for `window`."""

    def __init__(self, env: gym.Env, window: int | None = None, *, horizon: int | None = None):
        if (window is None) == (horizon is None):
            raise TypeError("HistoryWrapper needs the window length: window= (or horizon=)")
        window = window if horizon is None else horizon
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


class RecedingHorizonWrapper(_ForwardsAttributes, gym.Wrapper):
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


class TemporalEnsembleWrapper(_ForwardsAttributes, gym.Wrapper):
    """`step` takes a chunk float32[H, A] (H >= action_horizon; rows past action_horizon are
    ignored) every step and executes the temporally ensembled action (see `TemporalEnsembler`
    for the weights).

    Octo's form ``TemporalEnsembleWrapper(env, pred_horizon, exp_weight=0)`` works too: Octo's
    `exp_weight` m weighs OLDER predictions more, ``exp(-m i)`` with i counted from the oldest;
    it is ``decay = -m`` here.
    """

    def __init__(
        self,
        env: gym.Env,
        action_horizon: int | None = None,
        decay: float = 0.0,
        *,
        pred_horizon: int | None = None,
        exp_weight: float | None = None,
    ):
        if (action_horizon is None) == (pred_horizon is None):
            raise TypeError(
                "TemporalEnsembleWrapper needs the chunk length: action_horizon= "
                "(or Octo's pred_horizon=)"
            )
        if exp_weight is not None:
            if decay != 0.0:
                raise TypeError("pass decay= or Octo's exp_weight= (= -decay), not both")
            decay = -float(exp_weight)
        action_horizon = action_horizon if pred_horizon is None else pred_horizon
        super().__init__(env)
        self.ensembler = TemporalEnsembler(action_horizon, decay)
        self.action_space = _tile_box(env.action_space, action_horizon, "TemporalEnsembleWrapper")

    def reset(self, **kwargs):
        self.ensembler.reset()
        return self.env.reset(**kwargs)

    def step(self, action):
        action = np.asarray(action)
        if action.ndim == 2:  # Octo executes the first pred_horizon rows of a longer chunk
            action = action[: self.ensembler.action_horizon]
        self.ensembler.set_chunk(action)
        executed = self.ensembler.next_action()
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}


class RHCWrapper(RecedingHorizonWrapper):
    """Octo's `RHCWrapper(env, exec_horizon)`: executes the first `exec_horizon` actions of a
    chunk (stopping early at the episode's end) and returns the last observation, the summed
    reward and Octo's info: every key of the executed steps' infos as a list (one value per
    step), ``rewards`` (the list) and ``observations`` (the list; the chunk's last observation
    is also the returned one). With ``exec_horizon=1`` a single action float32[A] is accepted.
    ``num_executed`` is octo_like's addition.
    """

    def step(self, action):
        action = np.asarray(action)
        if self.exec_horizon == 1 and action.ndim == 1:
            action = action[None]
        self.executor.set_chunk(action)
        rewards, observations, infos = [], [], []
        while not self.executor.needs_chunk():
            obs, reward, terminated, truncated, info = self.env.step(self.executor.next_action())
            rewards.append(reward)
            observations.append(obs)
            infos.append(info)
            if terminated or truncated:
                break
        keys = list(dict.fromkeys(k for info in infos for k in info))
        merged: dict[str, Any] = {k: [info.get(k) for info in infos] for k in keys}
        merged.update(rewards=rewards, observations=observations, num_executed=len(rewards))
        return obs, float(np.sum(rewards)), terminated, truncated, merged


class NormalizeProprio(_ForwardsAttributes, gym.ObservationWrapper):
    """Octo's `NormalizeProprio(env, action_proprio_metadata)`: the observation's ``proprio``
    normalized as the model's training data was, before the policy sees it.

    `action_proprio_metadata`: ``model.dataset_statistics`` of a model trained on one dataset
    (several: pass ``model.dataset_statistics[NAME]``), or Octo's flat ``{"proprio": {mean,
    std, ...}}``. The dataset's normalization is used ("normal": ``(x - mean) / max(std,
    1e-6)``; "bounds": p01 / p99 to [-1, 1], clipped), Octo's ``"normal"`` for a bare flat dict;
    a ``mask`` in the proprio statistics leaves its False dims as they are. An observation with
    proprio but no proprio statistics is an error (as Octo's assertion); one without proprio
    passes unchanged.
    """

    def __init__(self, env: gym.Env, action_proprio_metadata: Mapping[str, Any]):
        super().__init__(env)
        self.statistics, self.normalization, self.mask, self._missing = _proprio_statistics(
            action_proprio_metadata
        )
        space = env.observation_space
        if self.statistics is not None and isinstance(space, gym.spaces.Dict) and PROPRIO in space:
            spaces = dict(space.spaces)
            spaces[PROPRIO] = gym.spaces.Box(
                -np.inf, np.inf, spaces[PROPRIO].shape, spaces[PROPRIO].dtype
            )
            self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation):
        if PROPRIO not in observation:
            return observation
        if self.statistics is None:
            raise ValueError(f"NormalizeProprio: the observation has proprio but {self._missing}")
        proprio = np.asarray(observation[PROPRIO])
        normalized = normalize_np(
            proprio.astype(np.float32), self.statistics, self.normalization, self.mask
        )
        return {**observation, PROPRIO: normalized}


def _proprio_statistics(metadata: Mapping[str, Any]):
    """(proprio ArrayStatistics | None, normalization, mask | None, why none) of Octo's
    metadata forms (see `NormalizeProprio`)."""
    if isinstance(metadata, StatisticsByDataset):  # OctoModel.dataset_statistics
        try:
            metadata = metadata.only_entry(PROPRIO)
        except KeyError as error:
            return None, "none", None, error.args[0]
    if "statistics" in metadata and "normalization" in metadata:  # one dataset's entry
        proprio, kind = metadata["statistics"].get(PROPRIO), metadata["normalization"]
    else:  # Octo's flat form
        proprio = metadata.get(PROPRIO)
        kind = "normal" if proprio is None else proprio.get("normalization", "normal")
    if proprio is None:
        return None, "none", None, "the statistics have no proprio statistics"
    mask = proprio.get("mask")
    stats = ArrayStatistics.from_dict(proprio, "NormalizeProprio's proprio statistics")
    return stats, kind, None if mask is None else [bool(m) for m in mask], ""

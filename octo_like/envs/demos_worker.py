"""The worker-side half of demonstration collection: one noisy scripted-expert episode as
numpy columns (no TensorFlow here; `demos.py` writes the columns as RLDS in the parent)."""

from __future__ import annotations

import numpy as np

from octo_like.envs.metaworld_env import MetaWorldEnv

ACTION_LABELS = ("executed", "expert")


def run_expert_episode(
    env: MetaWorldEnv,
    seed: int,
    steps_after_success: int = 0,
    action_labels: str = "executed",
    expert_gain: float = 1.0,
) -> dict:
    """Rolls out ``env``'s expert from the scene of `seed` until success or truncation, then, on
    success, `steps_after_success` more steps of the expert holding the solved task (an episode
    that ends the moment the goal is reached never shows a policy how to stop there).

    The noisy expert action is executed either way; `action_labels` says what is recorded:
    "executed" (that noisy action) or "expert" (the noise-free expert action in the same state:
    noise widens the states a policy sees, the label stays the expert's, as in DART).
    `expert_gain` scales the expert's xyz command (`MetaWorldEnv.expert_actions`).

    Returns ``{"observation": {key: [T, ...]}, "action": float32[T, A], "reward": float32[T],
    "success": bool, "length": T, "seed": seed, "instruction": str}``; step t pairs the
    observation before action t with that action. The instruction is one of the task's phrasings,
    drawn from `seed`.
    """
    obs, _ = env.reset(seed=seed)
    observations = {key: [] for key in obs}
    actions, rewards = [], []
    success, remaining = False, None  # remaining: steps left after success (None: not yet)
    if action_labels not in ACTION_LABELS:
        raise ValueError(f"action_labels must be one of {ACTION_LABELS}, got {action_labels!r}")
    while remaining != 0:
        clean, action = env.expert_actions(expert_gain)
        for key, value in obs.items():
            observations[key].append(value)
        actions.append(clean if action_labels == "expert" else action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if remaining is not None:
            remaining -= 1
        elif terminated or truncated:
            success = bool(info["success"])
            remaining = steps_after_success if success else 0
    phrasings = env.task.instructions
    instruction = phrasings[np.random.default_rng([seed, 7]).integers(len(phrasings))]
    return {
        "observation": {key: np.stack(values) for key, values in observations.items()},
        "action": np.stack(actions).astype(np.float32),
        "reward": np.asarray(rewards, np.float32),
        "success": success,
        "length": len(actions),
        "seed": seed,
        "instruction": instruction,
    }

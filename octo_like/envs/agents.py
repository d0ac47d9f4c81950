"""Who acts in a closed-loop evaluation: a checkpoint's policy, the scripted expert, or random.

All three go through the same `evaluation.evaluate` loop, so the expert (a ceiling) and random
actions (a floor) are measured exactly as a policy is. An agent sees the active environment slots
of one step together, so a policy runs one batched forward pass for every environment that needs
a new action chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from octo_like.envs.variants import EmbodimentVariant


class Agent(Protocol):
    name: str
    needs_expert: bool  # workers attach info["expert_action"] each step
    # Side of the square images the agent was trained on (None: any); an evaluation without its
    # own image_size renders at it, so a policy sees the resolution it learned from.
    render_size: int | None

    def prepare(self, num_slots: int) -> None:
        """Called once before the first episode with the number of parallel environments."""

    def reset(
        self, slot: int, task: str, instruction: str | None, goal: dict | None = None
    ) -> None:
        """A new episode starts in environment slot `slot`, told by `instruction` and/or `goal`
        images ``{camera: uint8[s, s, 3]}`` what to do (None: not given)."""

    def act(
        self, slots: Sequence[int], observations: Sequence[dict], infos: Sequence[dict]
    ) -> list[np.ndarray]:
        """One action (the variant's units) per given slot."""

    def latency_ms(self) -> dict[str, float] | None:
        """Per-call policy latency summary, if this agent runs a model."""


class ExpertAgent:
    """MetaWorld's scripted expert (no noise), read from the worker's ``expert_action``."""

    name = "expert"
    needs_expert = True
    render_size = None

    def prepare(self, num_slots: int) -> None:
        pass

    def reset(self, slot: int, task: str, instruction: str | None, goal=None) -> None:
        pass

    def act(self, slots, observations, infos) -> list[np.ndarray]:
        return [np.asarray(info["expert_action"], np.float32) for info in infos]

    def latency_ms(self) -> None:
        return None


class RandomAgent:
    """Uniform random MetaWorld actions, mapped into the variant's units."""

    name = "random"
    needs_expert = False
    render_size = None

    def __init__(self, variant: EmbodimentVariant, seed: int = 0):
        self._variant = variant
        self._rng = np.random.default_rng(seed)

    def prepare(self, num_slots: int) -> None:
        pass

    def reset(self, slot: int, task: str, instruction: str | None, goal=None) -> None:
        pass

    def act(self, slots, observations, infos) -> list[np.ndarray]:
        return [self._variant.from_env_action(self._rng.uniform(-1, 1, 4)) for _ in slots]

    def latency_ms(self) -> None:
        return None


class PolicyAgent:
    """A `octo_like.inference.Policy` driving several environments at once.

    Each slot has its own `PolicySession`: observation history (the model's window, with
    ``timestep_pad_mask`` False before the episode start) and chunk executor (receding horizon or
    temporal ensembling, as configured on the policy); slots whose executor needs a chunk are
    batched into one `predict_chunks` call.
    """

    needs_expert = False

    def __init__(self, policy: Any, name: str = "policy"):
        self.name = name
        self._policy = policy
        self._slots: dict[int, dict[str, Any]] = {}  # slot -> {"session", "instruction"}
        self._batch = 1
        # The simulator may render cameras the model does not read (e.g. a wrist camera).
        self._keys = {f"image_{camera}" for camera in policy.config.cameras} | {"proprio"}
        self.render_size = render_size_of(policy.model.input_spec)

    def prepare(self, num_slots: int) -> None:
        """Compiles the model for the evaluation's batch size before the clock starts."""
        self._batch = max(self._batch, num_slots)
        self._policy.warmup(self._batch)

    def reset(self, slot: int, task: str, instruction: str | None, goal=None) -> None:
        # A fresh session: the policy's own history + executor for this robot; the task is
        # batched across slots below, so only the instruction and goal images are kept.
        if goal is not None:  # the simulator may render cameras the model does not read
            goal = {c: np.asarray(goal[c]) for c in self._policy.config.cameras if c in goal}
        self._slots[slot] = {
            "session": self._policy.new_session(), "instruction": instruction or "", "goal": goal,
        }  # fmt: skip

    def act(self, slots, observations, infos) -> list[np.ndarray]:
        from octo_like.inference import stack_windows

        windows = [
            self._slots[s]["session"].history.push({k: v for k, v in o.items() if k in self._keys})
            for s, o in zip(slots, observations, strict=True)
        ]
        executors = [self._slots[s]["session"].executor for s in slots]
        needing = [i for i, executor in enumerate(executors) if executor.needs_chunk()]
        if needing:
            # Pad to the most slots seen so the model compiles for one batch size, not for
            # every count of environments that happen to need a chunk at the same step.
            self._batch = max(self._batch, len(slots))
            rows = needing + [needing[-1]] * (self._batch - len(needing))
            batch = stack_windows([windows[i] for i in rows])
            texts = [self._slots[slots[i]]["instruction"] for i in rows]
            goals = [self._slots[slots[i]]["goal"] for i in rows]
            tasks = texts
            if goals[0] is not None:  # "" instructions are masked out (goal-only)
                stacked = {c: np.stack([g[c] for g in goals]) for c in goals[0]}
                tasks = self._policy.create_tasks(texts, stacked)
            chunks = self._policy.predict_chunks(batch, tasks)[: len(needing)]
            for i, chunk in zip(needing, chunks, strict=True):
                executors[i].set_chunk(chunk)
        return [executor.next_action() for executor in executors]

    def latency_ms(self) -> dict[str, float]:
        return self._policy.latency_ms()


def render_size_of(input_spec: dict) -> int | None:
    """The largest image side among the observation images a model reads (its input spec), or
    None without images: simulated datasets render every camera at one size, and smaller camera
    sizes come from resizing in the data pipeline, as the policy resizes at inference."""
    sides = [
        max(entry["shape"][-3:-1])
        for key, entry in input_spec.get("observation", {}).items()
        if key.startswith("image_") and len(entry["shape"]) >= 3
    ]
    return max(sides) if sides else None

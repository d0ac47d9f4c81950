"""Closed-loop evaluation: roll an agent out in parallel MetaWorld workers, report success.

The policy is told the task by the task's first instruction (``conditioning="language"``; or its
second phrasing, or nothing, with ``instruction="alternate"`` / ``"empty"``: does it follow the
words or recognize the scene?), by goal
images (``"goal"``: the last frame of the scripted expert playing out the same scene first, as a
goal-conditioned Octo is evaluated with a photo of the finished task), or by both
(``"language+goal"``).

Episode ``i`` of task ``t`` always starts from the scene drawn from ``(seed, t, i)``, so two
policies (or a policy and the expert) are compared on the same scenes; those seeds never overlap
the ones demonstrations are collected with. Each worker runs one episode at a time; every loop
iteration asks the agent for one action per active worker (one batched model call for the
slots that need a chunk) and steps all workers in parallel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from typing import Any

import numpy as np

from octo_like.envs.agents import Agent
from octo_like.envs.eval_report import EpisodeResult, EvalReport
from octo_like.envs.tasks import get_task, parse_tasks
from octo_like.envs.variants import get_variant
from octo_like.envs.worker import EnvPool

CONDITIONINGS = ("language", "goal", "language+goal")
INSTRUCTIONS = ("canonical", "alternate", "empty")  # what a language-conditioned policy hears


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`conditioning`: one of `CONDITIONINGS` (module docstring). `video_episodes`: how many
    episodes per task to record (primary camera) into `video_dir` as
    ``<task>_<episode>_<success|failure>.<video_format>``."""

    tasks: tuple[str, ...]
    episodes_per_task: int = 10
    variant: str = "default"
    image_size: int | None = None
    max_episode_steps: int = 150
    seed: int = 0
    workers: int = 2
    video_dir: str | None = None
    video_episodes: int = 2
    video_format: str = "mp4"
    conditioning: str = "language"
    instruction: str = "canonical"

    def __post_init__(self):
        object.__setattr__(self, "tasks", parse_tasks(self.tasks))
        get_variant(self.variant)
        if self.episodes_per_task < 1 or self.max_episode_steps < 1 or self.workers < 1:
            raise ValueError("episodes_per_task, max_episode_steps and workers must be >= 1")
        if self.video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be mp4 or gif, got {self.video_format!r}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}"
            )
        if self.instruction not in INSTRUCTIONS:
            raise ValueError(f"instruction must be one of {INSTRUCTIONS}, got {self.instruction!r}")


def told_instruction(task: str, which: str) -> str:
    """The words the policy hears for `task`: its canonical phrasing, its second one (the first
    where it has one only) or "" (`INSTRUCTIONS`)."""
    phrasings = get_task(task).instructions
    return {"canonical": phrasings[0], "alternate": phrasings[min(1, len(phrasings) - 1)],
            "empty": ""}[which]  # fmt: skip


def episode_seed(seed: int, task: str, episode: int) -> int:
    """The scene of `episode` of `task`: keyed by the task's name, so a task gets the same
    scenes whatever other tasks are evaluated with it and in whatever order."""
    # The 99 keeps evaluation scenes apart from collection seeds (see demos._job_seed).
    name = [int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little") % 2**32]
    words = [seed, 99, *name, episode]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31))


def episode_jobs(config: EvalConfig) -> list[tuple[str, int, int]]:
    """(task, episode index, scene seed) of every episode the evaluation runs."""
    return [
        (task, index, episode_seed(config.seed, task, index))
        for task in config.tasks
        for index in range(config.episodes_per_task)
    ]


def evaluate(
    agent: Agent, config: EvalConfig, *, gl_backend: str | None = None, progress: bool = True
) -> EvalReport:
    """Runs ``episodes_per_task`` episodes of every task with `agent`; returns the report."""
    from tqdm import tqdm

    if config.image_size is None and agent.render_size is not None:
        config = dataclasses.replace(config, image_size=agent.render_size)
    jobs = episode_jobs(config)
    pending = iter(jobs)
    results: list[EpisodeResult] = []
    workers = min(config.workers, len(jobs))
    agent.prepare(workers)
    slots: dict[int, dict[str, Any]] = {}  # worker -> running episode
    bar = tqdm(total=len(jobs), desc=f"evaluating {agent.name}", disable=not progress)
    start, env_steps = time.perf_counter(), 0

    with EnvPool(workers, gl_backend=gl_backend) as pool:

        def start_next(worker: int) -> None:
            job = next(pending, None)
            if job is None:
                slots.pop(worker, None)
                return
            task, index, seed = job
            make = dict(
                task=task, variant=config.variant, image_size=config.image_size,
                max_episode_steps=config.max_episode_steps,
            )  # fmt: skip
            pool.call("make", [make], workers=[worker])
            goal = None
            if "goal" in config.conditioning:
                (played,) = pool.call("expert_goal", [dict(seed=seed)], workers=[worker])
                goal = played["goal"]
                if not played["expert_success"]:
                    logging.getLogger(__name__).warning(
                        "%s episode %d (seed %d): the scripted expert did not finish the scene, "
                        "so its goal image shows an unsolved task", task, index, seed,
                    )  # fmt: skip
            (reset,) = pool.call(
                "reset", [dict(seed=seed, with_expert=agent.needs_expert)], workers=[worker]
            )
            instruction = told_instruction(task, config.instruction)
            if "language" not in config.conditioning:
                instruction = None
            agent.reset(worker, task, instruction, goal)
            record = index < config.video_episodes and config.video_dir
            slots[worker] = {
                "task": task, "index": index, "seed": seed, "obs": reset["obs"],
                "info": reset["info"], "length": 0, "frames": [] if record else None,
            }  # fmt: skip
            _record_frame(slots[worker], reset["obs"])

        for worker in range(workers):
            start_next(worker)
        while slots:
            active = sorted(slots)
            actions = agent.act(
                active, [slots[w]["obs"] for w in active], [slots[w]["info"] for w in active]
            )
            steps = pool.call(
                "step",
                [dict(action=a, with_expert=agent.needs_expert) for a in actions],
                workers=active,
            )
            env_steps += len(active)
            for worker, step in zip(active, steps, strict=True):
                slot = slots[worker]
                slot.update(obs=step["obs"], info=step["info"], length=slot["length"] + 1)
                _record_frame(slot, step["obs"])
                if step["terminated"] or step["truncated"]:
                    results.append(_finish(slot, bool(step["info"]["success"]), config))
                    bar.update(1)
                    start_next(worker)
    bar.close()
    seconds = time.perf_counter() - start
    results.sort(key=lambda r: (config.tasks.index(r.task), r.episode))
    return EvalReport(
        agent=agent.name,
        variant=config.variant,
        conditioning=config.conditioning,
        instruction=config.instruction,
        image_size=config.image_size,
        tasks=config.tasks,
        episodes=results,
        seconds=seconds,
        env_steps=env_steps,
        latency_ms=agent.latency_ms(),
    )


def _record_frame(slot: dict, obs: dict) -> None:
    if slot["frames"] is not None:
        slot["frames"].append(obs.get("image_primary", next(iter(obs.values()))))


def _finish(slot: dict, success: bool, config: EvalConfig) -> EpisodeResult:
    video = None
    if slot["frames"] is not None:
        video = write_video(
            slot["frames"],
            os.path.join(
                config.video_dir,
                f"{slot['task']}_{slot['index']:03d}_{'success' if success else 'failure'}"
                f".{config.video_format}",
            ),
        )
    return EpisodeResult(
        slot["task"], slot["index"], slot["seed"], success, slot["length"], video,
        final_distance=slot["info"].get("target_distance"),
    )  # fmt: skip


def write_video(frames: list[np.ndarray], path: str, fps: int = 20) -> str:
    """uint8[h, w, 3] frames -> an MP4 (H.264 via imageio-ffmpeg) or GIF at `path`."""
    import imageio.v2 as imageio

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".gif"):
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    return path

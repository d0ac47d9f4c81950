"""Closed-loop success of the model being trained, so a curve of success against steps exists.

`train.py` passes a `ClosedLoopEval` to the training loop for a simulated mix when
``config.simulation.eval_every > 0``; every that many steps (and at the end) the loop hands it
the model with the current parameters. It runs `evaluate` (simulators in spawned worker
processes, which never import TensorFlow; the model stays in the training process) on the
training tasks' evaluation scenes and returns ``success_rate`` (with its 95% Wilson interval),
``success/<task>`` and ``seconds``, which the loop logs under ``sim/``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClosedLoopEval:
    tasks: tuple[str, ...]
    every: int
    episodes_per_task: int = 5
    max_episode_steps: int = 150
    variant: str = "default"
    workers: int = 2
    seed: int = 0
    image_size: int | None = None  # the demonstrations' render size (None: the model's)

    @classmethod
    def from_simulation(cls, simulation: Any, mix: str) -> ClosedLoopEval:
        """From a run's `SimulationDataConfig` (eval_every, eval_episodes, ...) and its simulated
        mix, whose first dataset names the embodiment the policy is evaluated in (its cameras
        and action space: the stereo mix is evaluated with both of its cameras)."""
        from octo_like.data.oxe.mixes import resolve_mix
        from octo_like.envs.tasks import pretraining_tasks
        from octo_like.envs.variants import variant_of_mix_member

        variant = variant_of_mix_member(mix, resolve_mix(mix)[0][0].name)
        return cls(
            tasks=pretraining_tasks(simulation.tasks, simulation.held_out),
            every=int(simulation.eval_every),
            episodes_per_task=int(simulation.eval_episodes),
            max_episode_steps=int(simulation.eval_max_steps),
            workers=int(simulation.workers),
            seed=int(simulation.seed),
            variant=variant.name,
            image_size=int(simulation.image_size),
        )

    def __call__(self, step: int, model: Any) -> dict[str, float]:
        from octo_like.envs.agents import PolicyAgent
        from octo_like.envs.evaluation import EvalConfig, evaluate
        from octo_like.inference.policy import Policy

        dataset = f"metaworld_{self.variant}"
        name = dataset if dataset in model.dataset_statistics else None
        policy = Policy(model, dataset_name=name, warmup=False)
        config = EvalConfig(
            tasks=self.tasks,
            episodes_per_task=self.episodes_per_task,
            variant=self.variant,
            max_episode_steps=self.max_episode_steps,
            seed=self.seed,
            workers=self.workers,
            image_size=self.image_size,
        )
        report = evaluate(PolicyAgent(policy, name=f"policy@{step}"), config, progress=False)
        rows = report.per_task()
        overall = rows["all"]
        log.info("closed-loop success at step %d:\n%s", step, report.table())
        metrics = {
            "success_rate": float(overall["success_rate"]),
            "success_ci_low": float(overall["ci95"][0]),
            "success_ci_high": float(overall["ci95"][1]),
            "seconds": float(report.seconds),
        }
        for task, row in rows.items():
            if task != "all":
                metrics[f"success/{task}"] = float(row["success_rate"])
        return metrics

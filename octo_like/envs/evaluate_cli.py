"""scripts/evaluate.py's command line and run: closed-loop evaluation of a checkpoint, the
scripted expert (``--checkpoint expert``, the ceiling) or random actions (``random``, the
floor) in MetaWorld. Here, not in the script, so the transfer benchmark evaluates every row
through the very parser a user's ``python scripts/evaluate.py ...`` goes through without a
script importing a script."""

from __future__ import annotations

import argparse
import os

from octo_like.envs.eval_report import EvalReport
from octo_like.envs.evaluation import CONDITIONINGS, INSTRUCTIONS, EvalConfig, evaluate
from octo_like.envs.tasks import DEFAULT_TASKS
from octo_like.inference.cli import add_policy_arguments


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", required=True, help="checkpoint dir, 'expert' or 'random'")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant",
        default=None,
        help="embodiment (default: from the checkpoint's dataset, else 'default')",
    )
    parser.add_argument(
        "--image_size", type=int, default=None, help="render size (default: variant's)"
    )
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument(
        "--conditioning", default="language", choices=CONDITIONINGS,
        help="how the policy is told the task (goal images: the expert's last frame)",
    )  # fmt: skip
    parser.add_argument(
        "--instruction", default="canonical", choices=INSTRUCTIONS,
        help="language: the task's first phrasing, its second, or none (the scene alone)",
    )  # fmt: skip
    parser.add_argument("--video_dir", default=None)
    parser.add_argument("--video_episodes", type=int, default=2, help="videos per task")
    parser.add_argument("--video_format", default="mp4", choices=("mp4", "gif"))
    parser.add_argument("--chart", default=None, help="PNG path for a success-per-task bar chart")
    parser.add_argument("--gl", default=None, choices=("egl", "osmesa"), help="MuJoCo GL backend")
    parser.add_argument("--no_progress", action="store_true")
    add_policy_arguments(parser)
    return parser.parse_args(argv)


def make_agent(args):
    """(agent, variant name) for --checkpoint."""
    from octo_like.envs.agents import ExpertAgent, PolicyAgent, RandomAgent
    from octo_like.envs.variants import get_variant, variant_of_dataset

    if args.checkpoint == "expert":
        return ExpertAgent(), args.variant or "default"
    if args.checkpoint == "random":
        variant = args.variant or "default"
        return RandomAgent(get_variant(variant), seed=args.seed), variant
    from octo_like.inference.cli import policy_from_args

    policy = policy_from_args(args)
    variant = args.variant
    if variant is None:
        inferred = variant_of_dataset(policy.dataset_name or "")
        variant = inferred.name if inferred else "default"
    return PolicyAgent(
        policy, name=agent_name(args.checkpoint, policy.metadata().get("step"))
    ), variant


def agent_name(checkpoint: str, step: int | None) -> str:
    """``policy:<run>@<step>``: the run is the directory holding ``checkpoints/`` (or the
    checkpoint directory's own name), so reports of different runs and steps tell apart."""
    path = os.path.normpath(checkpoint)
    run = os.path.basename(path)
    if run == "checkpoints" and os.path.basename(os.path.dirname(path)):
        run = os.path.basename(os.path.dirname(path))
    return f"policy:{run}@{step if step is not None else 'latest'}"


def run(args: argparse.Namespace) -> EvalReport:
    """Evaluates as `args` (`parse_args`'s) says; prints the table, the chart's path (--chart)
    and, last, the report's JSON line."""
    agent, variant = make_agent(args)
    config = EvalConfig(
        tasks=tuple(args.tasks.split(",")),
        episodes_per_task=args.episodes,
        variant=variant,
        image_size=args.image_size,
        max_episode_steps=args.max_steps,
        seed=args.seed,
        workers=args.workers,
        video_dir=args.video_dir,
        video_episodes=args.video_episodes,
        video_format=args.video_format,
        conditioning=args.conditioning,
        instruction=args.instruction,
    )
    report = evaluate(agent, config, gl_backend=args.gl, progress=not args.no_progress)
    print(report.table())
    if args.chart:
        print(f"chart: {report.bar_chart(args.chart)}")
    print(report.json_line())
    return report


def main(argv=None) -> EvalReport:
    """scripts/evaluate.py's command line `argv` run: what the transfer benchmark calls."""
    return run(parse_args(argv))

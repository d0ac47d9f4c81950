"""Closed-loop evaluation of a checkpoint (or the scripted expert, or random actions) in MetaWorld.

    python scripts/evaluate.py --checkpoint runs/laptop/checkpoints --tasks reach,push --episodes 20
    python scripts/evaluate.py --checkpoint expert --tasks reach,push --episodes 20   # ceiling
    python scripts/evaluate.py --checkpoint random --tasks reach,push --episodes 20   # floor
    python scripts/evaluate.py --checkpoint runs/laptop/checkpoints --conditioning goal

The policy is told each task by its instruction (--conditioning language, the default), by a goal
image (goal: the scripted expert first plays out the same scene and its last frame is the goal,
as a goal-conditioned Octo is given a photo of the finished task) or by both (language+goal).

Environments run in --workers spawned processes; each step batches the observations of every
environment that needs a new action chunk into one model call. Chunks are executed with receding
horizon (--exec_horizon actions, default the whole chunk) or temporal ensembling
(--execution ensemble). Prints a table (success per task with a 95% Wilson interval, mean episode
length, policy latency) and, last, one JSON line. --video_dir writes MP4 (or --video_format gif)
rollouts; --chart writes a PNG bar chart of success per task.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    from octo_like.envs.evaluation import CONDITIONINGS
    from octo_like.envs.tasks import DEFAULT_TASKS
    from octo_like.inference.cli import add_policy_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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


def main(argv=None):
    args = parse_args(argv)
    from octo_like.envs.evaluation import EvalConfig, evaluate

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
    )
    report = evaluate(agent, config, gl_backend=args.gl, progress=not args.no_progress)
    print(report.table())
    if args.chart:
        print(f"chart: {report.bar_chart(args.chart)}")
    print(report.json_line())
    return report


if __name__ == "__main__":
    main()

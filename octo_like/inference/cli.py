"""Command-line flags shared by the scripts that load a checkpoint as a `Policy`
(scripts/evaluate.py, scripts/serve_policy.py): one definition of how a policy is chosen."""

from __future__ import annotations

import argparse
import math


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """--step, --dataset_name, --execution, --exec_horizon, --ensemble_decay (the script defines
    --checkpoint and --seed, whose meaning it documents)."""
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument(
        "--dataset_name", default=None,
        help="whose statistics map proprio in and actions out (required for multi-dataset models)",
    )  # fmt: skip
    parser.add_argument("--execution", choices=("receding", "ensemble"), default="receding")
    parser.add_argument(
        "--exec_horizon", type=int, default=None, help="receding: actions per chunk (default H)"
    )
    parser.add_argument("--ensemble_decay", type=float, default=0.0)


def policy_from_args(args: argparse.Namespace):
    """The `Policy` the parsed flags describe (loaded and warmed up)."""
    from octo_like.inference.policy import Policy

    return Policy.from_checkpoint(
        args.checkpoint,
        step=args.step,
        dataset_name=args.dataset_name,
        execution=args.execution,
        exec_horizon=args.exec_horizon,
        ensemble_decay=args.ensemble_decay,
        seed=args.seed,
    )


def policy_argument_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the policy flags without loading the model (the rest, e.g.
    --exec_horizon beyond the model's action horizon, needs the checkpoint)."""
    problems = []
    if args.step is not None and args.step < 0:
        problems.append(f"--step must be >= 0, got {args.step}")
    if args.exec_horizon is not None and args.exec_horizon < 1:
        problems.append(f"--exec_horizon must be >= 1, got {args.exec_horizon}")
    if args.execution == "ensemble" and args.exec_horizon not in (None, 1):
        problems.append(
            f"--execution ensemble executes 1 action per chunk, not {args.exec_horizon}"
        )
    if not math.isfinite(args.ensemble_decay):
        problems.append(f"--ensemble_decay must be finite, got {args.ensemble_decay}")
    return problems

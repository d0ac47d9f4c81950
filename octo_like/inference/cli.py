"""Command-line flags shared by the scripts that load a checkpoint as a `Policy`
(scripts/evaluate.py, scripts/serve_policy.py): one definition of how a policy is chosen."""

from __future__ import annotations

import argparse


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

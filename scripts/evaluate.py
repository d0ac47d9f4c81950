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
rollouts; --chart writes a PNG bar chart of success per task. The logic is
`octo_like.envs.evaluate_cli` (the transfer benchmark evaluates its rows through it too).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    from octo_like.envs.evaluate_cli import parse_args as parse

    return parse(argv, description=__doc__.split("\n")[0])


def main(argv=None):
    """Evaluates; returns the `EvalReport` (its JSON line is the last line printed)."""
    from octo_like.envs.evaluate_cli import run

    return run(parse_args(argv))


if __name__ == "__main__":
    main()

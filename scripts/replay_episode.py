"""Replay one recorded episode through a policy: does it reproduce its own training data?

    python scripts/replay_episode.py --checkpoint runs/my_robot/checkpoints \
        --data_dir /data/my_robot/1.0.0 [--dataset NAME] [--spec my_robot_spec.json] \
        [--split train] [--episode 0] [--exec_horizon N] [--out replay.png] [--json]

The last check for a fine-tuned policy that hovers or acts at random. The episode is read as
training reads it (the dataset's spec from the registry, or --spec for a dataset outside it;
the checkpoint's cameras, image sizes and proprio) and stepped through the policy frame by frame
with its instruction, as a robot would run it (--exec_horizon actions of each chunk, default
the whole chunk; --exec_horizon 1 scores each chunk's first action at every step). Prints, per
action dim and overall, the error of the policy's actions against the recorded ones, that of
holding the checkpoint's mean action (a hovering policy scores the same), their correlation and,
for 7-dim end-effector actions, Octo's xyz_angle / xyz_accuracy / gripping_accuracy; --json
prints one JSON line instead, --out a PNG of predicted vs recorded actions. Bad input (an
episode out of range, another action dimension, a missing camera key) is one line on stderr and
exit status 2. The logic is `octo_like.inference.replay`.
"""

from __future__ import annotations

import argparse
import json
import sys

from octo_like.host import lean_tensorflow  # noqa: E402  (imports nothing)

lean_tensorflow()  # as train.py: before TensorFlow is imported


def parse_args(argv=None) -> argparse.Namespace:
    from octo_like.inference.cli import add_policy_arguments, policy_argument_problems

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="directory holding <step>/ dirs")
    parser.add_argument("--data_dir", required=True, help="prepared TFDS dir or data root")
    parser.add_argument("--dataset", default=None, help="registry name (default: the builder's)")
    parser.add_argument(
        "--spec", default=None, help="DatasetSpec JSON of a dataset outside the registry"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--episode", type=int, default=0, help="index within the split")
    parser.add_argument("--seed", type=int, default=0, help="seeds the diffusion noise")
    parser.add_argument("--out", default=None, help="write a PNG of the actions here")
    parser.add_argument("--json", action="store_true", help="print one JSON line, no table")
    add_policy_arguments(parser)
    args = parser.parse_args(argv)
    problems = policy_argument_problems(args)
    if problems:  # before anything loads: usage and one line, exit status 2
        parser.error("; ".join(problems))
    return args


def main(argv=None) -> dict:
    """Replays; returns the report (printed as a table, or with --json as one JSON line)."""
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # the reader's; the accelerator is the model's
    from octo_like.inference.replay import ReplayError, replay_episode
    from octo_like.inference.replay_report import format_text

    try:
        result = replay_episode(
            args.checkpoint, args.data_dir, dataset=args.dataset, spec=args.spec,
            split=args.split, episode=args.episode, out=args.out, step=args.step,
            dataset_name=args.dataset_name, execution=args.execution,
            exec_horizon=args.exec_horizon, ensemble_decay=args.ensemble_decay, seed=args.seed,
        )  # fmt: skip
    except ReplayError as error:
        print(f"replay_episode.py: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(json.dumps(result) if args.json else format_text(result))
    return result


if __name__ == "__main__":
    main()

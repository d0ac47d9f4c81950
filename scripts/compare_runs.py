"""Do groups of training runs differ by more than their seeds do? One-way ANOVA per curve point.

    python scripts/compare_runs.py --num_steps 1500 --window 300 \
        --group head=runs/head_seed0,runs/head_seed1,runs/head_seed2 \
        --group c1128=runs/c1128_seed0,runs/c1128_seed1,runs/c1128_seed2 \
        --deciding val_loss,train_loss@1500 --out docs/benchmarks/compare

Each --group is LABEL=WORKDIR,WORKDIR,... (one workdir per seed of the same command, e.g. one
commit's runs); each run's curve is read from its metrics.jsonl as the convergence check reads
it (the training loss averaged over each `window` steps up to `num_steps`, the validation
metrics logged at `num_steps`, or at `--val_step`). Prints a table of each group's mean +- sd
per point with the F test over groups; `--deciding` names the points that decide (choose them
before the runs), and the exit status is 1 when one of them has p < alpha. `--out PREFIX` also
writes PREFIX.txt (the command and the table) and PREFIX.json (every run's curve and every
point's test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", action="append", required=True, metavar="LABEL=DIR,DIR,...")
    parser.add_argument("--num_steps", type=int, required=True, help="the step read up to")
    parser.add_argument("--window", type=int, required=True, help="steps per training-loss mean")
    parser.add_argument("--val_metrics", default="loss", help="validation metrics to compare")
    parser.add_argument(
        "--val_step", type=int, default=None, help="the validation's step (default: num_steps)"
    )
    parser.add_argument("--deciding", required=True, help="points that decide, e.g. val_loss")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--out", default="", help="PREFIX for PREFIX.txt and PREFIX.json")
    return parser.parse_args(argv)


def parse_groups(specs: list[str]) -> dict[str, list[str]]:
    """{label: [workdir, ...]} of --group LABEL=DIR,DIR,... values; ValueError names a bad one."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        label, sep, dirs = spec.partition("=")
        workdirs = [d for d in dirs.split(",") if d]
        if not sep or not label or not workdirs:
            raise ValueError(f"--group takes LABEL=WORKDIR,WORKDIR,..., got {spec!r}")
        if label in groups:
            raise ValueError(f"--group {label!r} given twice")
        groups[label] = workdirs
    return groups


def main(argv=None) -> int:
    args = parse_args(argv)
    from octo_like.training.benchmarks import convergence, run_comparison
    from octo_like.training.run.metrics import read_jsonl

    groups = parse_groups(args.group)
    val_metrics = [m for m in args.val_metrics.split(",") if m]
    curves = {}
    for label, workdirs in groups.items():
        curves[label] = []
        for workdir in workdirs:
            path = os.path.join(workdir, "metrics.jsonl")
            try:
                rows = read_jsonl(path)
                curve = convergence.curve_from_metrics(
                    rows, args.num_steps, args.window, val_metrics, args.val_step
                )
            except (OSError, ValueError) as e:
                raise SystemExit(f"{label}: {path}: {e}") from None
            curves[label].append(curve)
    comparisons = run_comparison.compare_groups(curves)
    deciding = [p for p in args.deciding.split(",") if p]
    table, differ = run_comparison.describe(comparisons, deciding, args.alpha)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "scripts/compare_runs.py", *given])
    print(table)
    if args.out:
        with open(args.out + ".txt", "w") as f:
            f.write(f"# {command}\n{table}\n")
        record = {
            "command": command,
            "groups": groups,
            "curves": curves,
            "deciding": deciding,
            "alpha": args.alpha,
            "differ": differ,
            "points": [dataclasses.asdict(c) for c in comparisons],
        }
        with open(args.out + ".json", "w") as f:
            json.dump(record, f, indent=1)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

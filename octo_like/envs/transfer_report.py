"""The transfer benchmark's report: ``transfer.txt`` (the budget line, then the table),
``transfer.png`` (bar chart) and ``transfer.jsonl`` (one JSON line, also printed last, so a
caller reads the result from the final line of output).

The budget line says what every row shares (demonstrations, steps, batch, seeds, episodes and
how chunks were executed) and which checkpoint the arms started from: a table read without it
cannot be compared with another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from octo_like.envs import transfer
from octo_like.envs.transfer import ArmResult


def execution_text(args) -> str:
    """How every row executed its chunks, e.g. ``receding, 2 actions/chunk``."""
    return (
        f"{args.execution}"
        + (f", {args.exec_horizon} actions/chunk" if args.exec_horizon else "")
        + (f", decay {args.ensemble_decay}" if args.execution == "ensemble" else "")
    )


def budget_text(args, seeds: Sequence[int], pretrained: str) -> str:
    """The report's first line (without its ``# ``): what every arm was given."""
    return (
        f"{args.demos} demos/task, {args.steps} steps at batch {args.batch_size}, seeds {seeds}, "
        f"{args.eval_episodes} episodes/task/seed (max {args.max_steps} steps, "
        f"{execution_text(args)}), pretrained: {pretrained}"
    )


def write_report(
    args, results: Sequence[ArmResult], pretrained: str, seeds: list[int]
) -> list[dict[str, Any]]:
    """Writes transfer.txt / .png / .jsonl into ``args.workdir`` and prints the table, the
    chart's path and the JSON line; returns the summary rows."""
    rows = transfer.summarize(results)
    text = transfer.table(rows)
    budget = budget_text(args, seeds, pretrained)
    chart = transfer.bar_chart(
        rows, os.path.join(args.workdir, "transfer.png"), title=f"transfer ({args.demos} demos)"
    )
    line = transfer.json_line(
        rows,
        pretrained=pretrained,
        demos_per_task=args.demos,
        steps=args.steps,
        batch_size=args.batch_size,
        seeds=seeds,
        eval_episodes=args.eval_episodes,
        max_steps=args.max_steps,
        execution=args.execution,
        exec_horizon=args.exec_horizon,
        ensemble_decay=args.ensemble_decay,
        train_seconds=round(sum(r.train_seconds for r in results), 1),
        eval_seconds=round(sum(r.eval_seconds for r in results), 1),
    )
    with open(os.path.join(args.workdir, "transfer.txt"), "w") as f:
        f.write(f"# {budget}\n{text}\n")
    with open(os.path.join(args.workdir, "transfer.jsonl"), "w") as f:
        f.write(line + "\n")
    print(f"# {budget}")
    print(text)
    print(f"chart: {chart}")
    print(line)
    return rows

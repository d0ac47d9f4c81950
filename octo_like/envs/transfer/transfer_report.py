"""The transfer benchmark's report: ``transfer.txt`` (header lines, then the table),
``transfer.png`` (the chart) and ``transfer.jsonl`` (one JSON line, also printed last, so a
caller reads the result from the final line of output). ``--report`` renames the three; by
default an evaluation with another instruction or checkpoint rule writes ``transfer-empty.*``,
``transfer-val_loss.*``..., so it does not overwrite the canonical report of the same arms.

The header says what every row shares (demonstrations, steps, batch, seeds, episodes and how
chunks were executed, the checkpoint the arms started from), where the results were made (one
commit and one CPU model, or MIXED when allowed: `paired.check_provenance`) and the command
that made them: a table read without them cannot be compared with another. When arms carry
offline numbers, the table is followed by each one's rank correlation with success over the arms
(`transfer_offline`), also in the JSON line (``offline_correlations``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

from octo_like.envs.transfer import transfer_charts, transfer_offline, transfer_summary
from octo_like.envs.transfer.paired import check_provenance
from octo_like.envs.transfer.plan import ArmResult


def execution_text(args) -> str:
    """How every row executed its chunks and was told its task, e.g. ``receding, 2
    actions/chunk`` (``..., empty instruction`` when not the canonical phrasing)."""
    instruction = args.instruction
    return (
        f"{args.execution}"
        + (f", {args.exec_horizon} actions/chunk" if args.exec_horizon else "")
        + (f", decay {args.ensemble_decay}" if args.execution == "ensemble" else "")
        + ("" if instruction == "canonical" else f", {instruction} instruction")
    )


def demos_text(counts: Sequence[int]) -> str:
    """``50 demos/task`` or ``5,10,25 demos/task (nested per seed)``."""
    text = ",".join(str(c) for c in counts)
    return f"{text} demos/task" + (" (nested per seed)" if len(counts) > 1 else "")


def budget_text(args, seeds: Sequence[int], pretrained: str) -> str:
    """The report's first line (without its ``# ``): what every arm was given."""
    chosen = (
        "" if args.select == "last"
        else f" (evaluated: the lowest validation loss of every {args.checkpoint_every} steps)"
    )  # fmt: skip
    return (
        f"{demos_text(args.demo_counts)}, {args.steps} steps{chosen} at batch {args.batch_size}, "
        f"seeds {list(seeds)}, {args.eval_episodes} episodes/task/seed (max {args.max_steps} "
        f"steps, {execution_text(args)}), pretrained: {pretrained}"
    )


def command_text(argv: Sequence[str] | None) -> str:
    """The benchmark's command line, quoted for a shell (rerun it to reproduce the report)."""
    if argv is None:
        return "(not recorded)"
    return "python scripts/benchmark_transfer.py " + " ".join(shlex.quote(a) for a in argv)


def write_report(
    args, results: Sequence[ArmResult], pretrained: str, seeds: list[int]
) -> list[dict[str, Any]]:
    """Writes ``<args.report>.txt`` / .png / .jsonl (default ``transfer``; `parse_args`)
    into ``args.workdir`` and prints the header, the
    table, the chart's path and the JSON line; returns the summary rows. Refuses results of
    several commits or CPU models unless ``args.allow_mixed_provenance``."""
    records = [record for r in results for record in r.provenance_records()]
    provenance = check_provenance(records, allow_mixed=args.allow_mixed_provenance)
    recipes = {name: recipe.mode for name, recipe in args.recipes.items()}
    rows = transfer_summary.summarize(results, recipes)
    text = transfer_summary.table(rows)
    context = {}
    if any(r.offline for r in results):
        correlations = transfer_offline.offline_correlations(results)
        heading = f"offline numbers of the evaluated step vs success, over all {len(results)} arms:"
        text += f"\n\n{heading}\n{transfer_offline.correlation_text(correlations)}"
        context["offline_correlations"] = correlations
    command = command_text(getattr(args, "argv", None))
    header = [budget_text(args, seeds, pretrained), provenance, f"command: {command}"]
    base = os.path.join(args.workdir, args.report)
    path = base + ".png"
    if len(args.demo_counts) > 1:
        chart = transfer_charts.curve_chart(rows, path)
    else:
        title = f"transfer ({demos_text(args.demo_counts)})"
        chart = transfer_charts.bar_chart(rows, path, title=title)
    line = transfer_summary.json_line(
        rows,
        pretrained=pretrained,
        demo_counts=list(args.demo_counts),
        steps=args.steps,
        batch_size=args.batch_size,
        seeds=seeds,
        eval_episodes=args.eval_episodes,
        max_steps=args.max_steps,
        execution=args.execution,
        exec_horizon=args.exec_horizon,
        ensemble_decay=args.ensemble_decay,
        recipes={name: [r.mode, *r.flags] for name, r in args.recipes.items()},
        provenance=provenance,
        command=command,
        train_seconds=round(sum(r.train_seconds for r in results), 1),
        eval_seconds=round(sum(r.eval_seconds for r in results), 1),
        **context,
    )
    head = "".join(f"# {h}\n" for h in header)
    with open(base + ".txt", "w") as f:
        f.write(f"{head}{text}\n")
    with open(base + ".jsonl", "w") as f:
        f.write(line + "\n")
    print(head + text)
    print(f"chart: {chart}")
    print(line)
    return rows

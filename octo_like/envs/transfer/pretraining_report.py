"""The transfer benchmark's report over several pretraining runs: ``<report>_pretraining.txt`` and
``.jsonl`` in the workdir (default ``transfer_pretraining``; the JSON line is also printed last).

Each pretraining run's own report (`transfer_report`) sits in its sub-workdir; this one reads
them together, per target x demonstration count x arm (mode or recipe; zero-shot rows are in the
runs' own reports): per run, the fine-tuned arm's successes and its paired gap to scratch over
seeds (`paired.paired_gap`); pooled over runs, the mean gap with the crossed design's t interval
(the bootstrap from enough runs); and how the arm's success rate varies between pretraining runs
and between fine-tuning seeds (`pretraining_variance`, whose docstring gives the formulas).

The header says what every row shares (the budget), the pretraining runs (checkpoint and
fingerprint of each), whether scratch arms were shared, where the results were made (one commit
and one CPU model, or MIXED when allowed: `paired.check_provenance`) and the command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from octo_like.envs.transfer.paired import check_provenance, paired_gap
from octo_like.envs.transfer.plan import SCRATCH, ZERO_SHOT, ArmResult
from octo_like.envs.transfer.pretraining_variance import (
    BOOTSTRAP_MIN_RUNS,
    BOOTSTRAP_SEED,
    RESAMPLES,
    balanced_grid,
    pooled_gap,
    variance_components,
)
from octo_like.envs.transfer.transfer_report import budget_text, command_text


class RunResults(NamedTuple):
    """One pretraining run's `name`, `checkpoint`, `fingerprint` (`pretrained_fingerprint`) and
    `results`: its fine-tuned arms and the scratch arms they pair with (its own or shared)."""

    name: str
    checkpoint: str
    fingerprint: str
    results: Sequence[ArmResult]


def _rate(result: ArmResult) -> float:
    return result.successes / max(result.episodes, 1)


def _by_cell(runs: Sequence[RunResults]):
    """({(target, demos, mode): {run: {seed: result}}} of the fine-tuned arms in plan order,
    {(target, demos): {run: {seed: result}}} of the scratch arms)."""
    arms: dict[tuple[str, int, str], dict[str, dict[int, ArmResult]]] = {}
    scratch: dict[tuple[str, int], dict[str, dict[int, ArmResult]]] = {}
    for run in runs:
        for result in run.results:
            arm = result.arm
            if arm.mode == ZERO_SHOT:
                continue
            if arm.mode == SCRATCH:
                cell = scratch.setdefault((arm.target.name, arm.demos), {})
            else:
                cell = arms.setdefault((arm.target.name, arm.demos, arm.mode), {})
            cell.setdefault(run.name, {})[arm.seed] = result
    return arms, scratch


def _grid(table, value, runs: Sequence[str], seeds: Sequence[int], what: str) -> np.ndarray:
    """float[R, S] of `value` (ArmResult -> number) over `table` ({run: {seed: result}})."""
    values = {run: {s: value(r) for s, r in by_seed.items()} for run, by_seed in table.items()}
    return balanced_grid(values, runs, seeds, what)


def pooled_rows(runs: Sequence[RunResults], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (target, demonstrations, fine-tuned arm): per run, its successes and paired
    gap to scratch; pooled over runs, the gap (`pooled_gap`) and the success rate's variance
    components (`variance_components`). ValueError when a run lacks a seed of an arm or of its
    scratch arm (unbalanced), naming each missing (run, seed)."""
    names = [run.name for run in runs]
    arms, scratch = _by_cell(runs)
    rows = []
    for (target, demos, mode), by_run in arms.items():
        base = scratch.get((target, demos), {})
        cell = f"{target}/{demos}demos"
        rates = _grid(by_run, _rate, names, seeds, f"{cell}/{mode}")
        episodes = _grid(by_run, lambda r: r.episodes, names, seeds, f"{cell}/{mode}")
        scratch_rates = _grid(base, _rate, names, seeds, f"{cell}/{SCRATCH}")
        per_run = []
        for i, run in enumerate(names):
            members = [by_run[run][s] for s in seeds]
            gap = paired_gap(
                dict(zip(seeds, rates[i], strict=True)),
                dict(zip(seeds, scratch_rates[i], strict=True)),
            )
            per_run.append({
                "run": run,
                "successes": sum(r.successes for r in members),
                "episodes": sum(r.episodes for r in members),
                "success_rate": round(float(rates[i].mean()), 4),
                "seed_rates": [round(float(r), 4) for r in rates[i]],
                "scratch_rate": round(float(scratch_rates[i].mean()), 4),
                "gap_to_scratch": gap.to_json(),
            })  # fmt: skip
        first = by_run[names[0]][seeds[0]].arm.target
        rows.append({
            "target": target,
            "variant": first.variant,
            "demos": demos,
            "mode": mode,
            "seeds": list(seeds),
            "runs": per_run,
            "success_rate": round(float(rates.mean()), 4),
            "gap_to_scratch": pooled_gap(rates - scratch_rates).to_json(),
            "variance": variance_components(rates, episodes).to_json(),
        })  # fmt: skip
    return rows


def _interval(low: float, high: float) -> str:
    return f"[{low:+.2f}, {high:+.2f}]"


def variance_text(variance: dict[str, Any]) -> str:
    """The success rate's standard deviations in points, the F test of a run effect and which
    point estimate is larger (a source "dominates" only where the test says the runs differ)."""
    noise = variance["evaluation_noise"]
    if noise is None:
        noise_text = "evaluation noise not measurable from 1 episode"
    else:
        ratio = (
            f", {noise / variance['ms_residual']:.2f} x MS_res" if variance["ms_residual"] else ""
        )
        noise_text = (
            f"evaluation noise alone {variance['sd_evaluation_noise_points']:.1f} pts{ratio}"
        )
    f, p = variance["run_effect_f"], variance["run_effect_p"]
    df = f"({variance['df_run']}, {variance['df_residual']})"
    if p is None:
        test = f"run effect F{df} undefined: no residual variation to test it against"
    else:
        found = "the runs differ" if variance["runs_differ"] else "no run effect shown"
        test = f"run effect F{df} = {f:.2f}, p = {p:.3f}: {found}"
    return (
        f"success-rate sd between pretraining runs {variance['sd_pretraining_points']:.1f} pts, "
        f"between fine-tuning seeds {variance['sd_finetuning_points']:.1f} pts ({noise_text}); "
        f"{test}; "
        f"larger point estimate: {variance['larger']} (MS_run {variance['ms_run']:.4f}, MS_seed "
        f"{variance['ms_seed']:.4f}, MS_res {variance['ms_residual']:.4f})"
    )


def _pooled_interval(pooled: dict[str, Any]) -> str:
    text = f"t (crossed, df {pooled['df']:.1f}) {_interval(*pooled['t_ci95'])}"
    if pooled["degenerate"]:
        text += " (degenerate: nothing varied)"
    if pooled["bootstrap_ci95"] is not None:
        text += f", bootstrap {_interval(*pooled['bootstrap_ci95'])}"
    return text


def pooled_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per (target, demonstrations, arm): a line per pretraining run (successes, per-seed
    rates, the paired gap to scratch), the pooled line, and the variance components."""
    header = (
        f"{'target':<12}{'variant':<9}{'demos':>6} {'arm':<14}{'run':<10}{'success':>11}"
        f"{'rate':>7}  {'per seed':<26}{'scratch':>8}  gap to scratch over seeds (t 95% CI)"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lead = f"{row['target']:<12}{row['variant']:<9}{row['demos']:>6} {row['mode']:<14}"
        for entry in row["runs"]:
            gap = entry["gap_to_scratch"]
            seeds = " ".join(f"{r:.2f}" for r in entry["seed_rates"])
            lines.append(
                f"{lead}{entry['run']:<10}{entry['successes']:>5}/{entry['episodes']:<5}"
                f"{entry['success_rate']:>7.2f}  {seeds:<26}{entry['scratch_rate']:>8.2f}  "
                f"{gap['mean']:+.2f} {_interval(*gap['t_ci95'])}"
            )
            lead = " " * len(lead)
        pooled = row["gap_to_scratch"]
        lines.append(
            f"{lead}{'pooled':<10}{'':>11}{row['success_rate']:>7.2f}  {'':<26}{'':>8}  "
            f"{pooled['mean']:+.2f} {_pooled_interval(pooled)}"
        )
        lines.append(f"{' ' * 8}{variance_text(row['variance'])}")
    return "\n".join(lines)


def write_pooled_report(
    args, runs: Sequence[RunResults], seeds: Sequence[int], scratch: str
) -> list[dict[str, Any]]:
    """Writes ``<args.report>_pretraining.txt`` / .jsonl into ``args.workdir`` and prints the
    header, the table and the JSON line (last); returns the rows. `scratch`: the header's
    sentence on the scratch arms (`pretraining_runs.scratch_sharing`). Refuses results of
    several commits or CPU models unless ``args.allow_mixed_provenance``."""
    seeds = sorted(seeds)
    records = [record for run in runs for r in run.results for record in r.provenance_records()]
    provenance = check_provenance(records, allow_mixed=args.allow_mixed_provenance)
    rows = pooled_rows(runs, seeds)
    command = command_text(getattr(args, "argv", None))
    listed = [f"pretraining run {run.name}: {run.checkpoint} ({run.fingerprint})" for run in runs]
    method = (
        "seeds are crossed with runs (a seed's demonstrations, data order and shared scratch arm "
        "are the same under every run): pooled, the mean of every (run, seed) difference with a "
        "t 95% CI from the crossed design's variance (Satterthwaite df); the bootstrap (runs and "
        f"seeds, {RESAMPLES} draws, seed {BOOTSTRAP_SEED}) from {BOOTSTRAP_MIN_RUNS} runs; "
        "variance: two-way ANOVA without replication of the fine-tuned success rate, F test of "
        "the run effect against the residual"
    )
    budget = budget_text(args, seeds, f"{len(runs)} runs (below)")
    header = [budget, *listed, f"scratch: {scratch}", provenance, f"command: {command}", method]
    line = json.dumps(
        {
            "pretraining_runs": [
                {"name": r.name, "checkpoint": r.checkpoint, "fingerprint": r.fingerprint}
                for r in runs
            ],
            "scratch": scratch,
            "demo_counts": list(args.demo_counts),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seeds": seeds,
            "eval_episodes": args.eval_episodes,
            "max_steps": args.max_steps,
            "execution": args.execution,
            "exec_horizon": args.exec_horizon,
            "ensemble_decay": args.ensemble_decay,
            "provenance": provenance,
            "command": command,
            "rows": rows,
        },
        sort_keys=True,
        default=lambda value: value.item() if isinstance(value, np.generic) else str(value),
    )
    head = "".join(f"# {h}\n" for h in header)
    text = pooled_table(rows)
    base = os.path.join(args.workdir, f"{args.report}_pretraining")
    with open(base + ".txt", "w") as f:
        f.write(f"{head}{text}\n")
    with open(base + ".jsonl", "w") as f:
        f.write(line + "\n")
    print(head + text)
    print(line)
    return rows

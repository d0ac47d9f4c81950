"""The transfer benchmark's results read as a reviewer would: pooled, and paired by seed.

`summarize` makes one row per (target, demonstrations, arm): the arm's episodes pooled over seeds
(success with a 95% Wilson interval), its per-seed rates, per-task counts, and each mode's gap to
the scratch arm of the same target and demonstration count, two ways:
- pooled: Newcombe's 95% interval on all episodes, as if every episode were independent;
- paired: the per-seed differences (both arms of a seed saw the same demonstrations, data order
  and scenes) with a Student-t 95% interval over seeds (`paired.paired_gap`), which carries the
  seed-to-seed spread the pooled interval ignores (issue 42: about twice as wide at 3 seeds).
The verdict reads the paired interval where there are at least two paired seeds and their
differences are not all equal (a zero-width interval from 2-3 seeds that happen to agree is not
certainty); else the pooled one.

Zero-shot rows (the pretrained checkpoint, no demonstrations) are compared with the scratch arm
of the fewest demonstrations, pooled only (they have no seeds to pair). A recipe's row (a mode
with extra flags, `transfer.Recipe`) is also compared with its base mode's row, both ways
(``gap_to_mode``): what its flags change, seed by seed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from octo_like.envs.eval_report import wilson_interval
from octo_like.envs.transfer.paired import paired_gap
from octo_like.envs.transfer.plan import SCRATCH, ZERO_SHOT, ArmResult, newcombe_difference


def _rate(successes: int, episodes: int) -> float:
    return successes / max(episodes, 1)


def _row(target: str, demos: int, mode: str, members: list[ArmResult]) -> dict[str, Any]:
    members.sort(key=lambda r: r.arm.seed)
    successes = sum(r.successes for r in members)
    episodes = sum(r.episodes for r in members)
    per_task: dict[str, dict[str, Any]] = {}
    for r in members:
        for task, (s, n) in r.per_task.items():
            entry = per_task.setdefault(task, {"successes": 0, "episodes": 0, "by_seed": {}})
            entry["successes"] += s
            entry["episodes"] += n
            entry["by_seed"][r.arm.seed] = _rate(s, n)
    return {
        "target": target,
        "variant": members[0].arm.target.variant,
        "demos": demos,
        "mode": mode,
        "seeds": [r.arm.seed for r in members],
        "successes": successes,
        "episodes": episodes,
        "success_rate": _rate(successes, episodes),
        "ci95": [round(x, 4) for x in wilson_interval(successes, episodes)],
        "seed_rates": [round(_rate(r.successes, r.episodes), 4) for r in members],
        "by_seed": {r.arm.seed: _rate(r.successes, r.episodes) for r in members},
        "per_task": {
            task: {
                "successes": e["successes"],
                "episodes": e["episodes"],
                "success_rate": _rate(e["successes"], e["episodes"]),
                "by_seed": e["by_seed"],
            }
            for task, e in per_task.items()
        },
    }


def _gap(row: dict[str, Any], base: dict[str, Any], *, paired: bool) -> dict[str, Any]:
    """`row`'s gap to `base` (scratch): pooled Newcombe, and paired over their common seeds."""
    diff, low, high = newcombe_difference(
        row["successes"], row["episodes"], base["successes"], base["episodes"]
    )
    gap = {
        "scratch_demos": base["demos"],
        "diff": round(diff, 4),
        "ci95": [round(low, 4), round(high, 4)],
        "paired": None,
    }
    common = sorted(set(row["by_seed"]) & set(base["by_seed"]))
    if paired and len(common) >= 2:
        gap["paired"] = paired_gap(
            {s: row["by_seed"][s] for s in common}, {s: base["by_seed"][s] for s in common}
        ).to_json()
    return gap


def _set_gaps(row: dict[str, Any], base: dict[str, Any], key: str, gap) -> None:
    """``row[key] = gap(row, base)``, and the same for each of `row`'s tasks that `base` has."""
    row[key] = gap(row, base)
    for task, entry in row["per_task"].items():
        if task in base["per_task"]:
            entry[key] = gap(entry, {**base["per_task"][task], "demos": base["demos"]})


def _gap_to_mode(row: dict[str, Any], base: dict[str, Any], mode: str) -> dict[str, Any]:
    """A recipe's gap to its base `mode` (`_gap` without its scratch field)."""
    gap = _gap(row, base, paired=True)
    del gap["scratch_demos"]
    return {"mode": mode, **gap}


def summarize(
    results: Iterable[ArmResult], recipes: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per (target, demonstrations, mode) in plan order, with the gaps to scratch of
    every mode and (per task) of every mode's tasks, and for each `recipes` name (``{recipe:
    base mode}``) the gap to its base mode's row. JSON-ready but for the ``by_seed`` dicts (int
    keys), which `json_line` writes as strings."""
    groups: dict[tuple[str, int, str], list[ArmResult]] = {}
    for result in results:
        arm = result.arm
        groups.setdefault((arm.target.name, arm.demos, arm.mode), []).append(result)
    rows = [_row(*key, members) for key, members in groups.items()]
    targets = list(dict.fromkeys(row["target"] for row in rows))  # each target's rows together
    rows.sort(key=lambda row: (targets.index(row["target"]), row["demos"]))
    scratch = {(r["target"], r["demos"]): r for r in rows if r["mode"] == SCRATCH}
    fewest: dict[str, dict[str, Any]] = {}
    for (target, _), row in sorted(scratch.items()):
        fewest.setdefault(target, row)
    for row in rows:
        if row["mode"] == SCRATCH:
            continue
        zero_shot = row["mode"] == ZERO_SHOT
        key = (row["target"], row["demos"])
        base = fewest.get(row["target"]) if zero_shot else scratch.get(key)
        if base is None:
            continue
        _set_gaps(row, base, "gap_to_scratch", functools.partial(_gap, paired=not zero_shot))
    by_mode = {(r["target"], r["demos"], r["mode"]): r for r in rows}
    for row in rows:
        mode = (recipes or {}).get(row["mode"])
        base = by_mode.get((row["target"], row["demos"], mode))
        if base is not None:
            _set_gaps(row, base, "gap_to_mode", functools.partial(_gap_to_mode, mode=mode))
    return rows


def verdict(row: dict[str, Any]) -> str:
    """How a mode's gap to scratch reads: beats / loses to scratch when its interval excludes
    zero (the paired interval over seeds where there is one), else no clear difference (the
    interval says how big a difference could hide)."""
    gap = row.get("gap_to_scratch")
    if gap is None:
        return ""
    low, high = gap["paired"]["t_ci95"] if _spread(gap.get("paired")) else gap["ci95"]
    if low > 0:
        return "beats scratch"
    if high < 0:
        return "worse than scratch"
    return "no clear difference"


def _spread(paired: dict[str, Any] | None) -> bool:
    """Whether a paired gap's seeds disagree at all (else its t interval has zero width)."""
    return bool(paired) and paired["t_ci95"][1] > paired["t_ci95"][0]


def _gap_text(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return ""
    low, high = gap["ci95"]
    text = f"{gap['diff']:+.2f} [{low:+.2f}, {high:+.2f}]"
    paired = gap.get("paired")
    if paired:
        p_low, p_high = paired["t_ci95"]
        text += f"  paired {paired['mean']:+.2f} [{p_low:+.2f}, {p_high:+.2f}]"
        text += "" if _spread(paired) else " (seeds all equal: pooled read)"
    return text


def _seed_text(row: dict[str, Any]) -> str:
    """A row's per-seed success rates, as the table's per-seed column shows them."""
    return " ".join(f"{r:.2f}" for r in row["seed_rates"])


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Success +- interval per (target, demonstrations, arm), per-seed rates, the gap to scratch
    (pooled and paired), then each row's per-seed differences and its per-task lines."""
    # Wide enough for every row's per-seed rates (five seeds take 24 characters) and a gap.
    width = max([20] + [len(_seed_text(row)) + 2 for row in rows])
    header = (
        f"{'target':<12}{'variant':<9}{'demos':>6} {'arm':<14}{'success':>11}{'rate':>7}"
        f"{'95% CI':>15}  {'per seed':<{width}}gap to scratch: pooled (95% CI), paired over "
        "seeds (t 95% CI)"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        low, high = row["ci95"]
        seeds = _seed_text(row)
        gap = row.get("gap_to_scratch")
        line = (
            f"{row['target']:<12}{row['variant']:<9}{row['demos'] or '-':>6} {row['mode']:<14}"
            f"{row['successes']:>5}/{row['episodes']:<5}{row['success_rate']:>7.2f}"
            f"{f'[{low:.2f}, {high:.2f}]':>15}  {seeds:<{width}}{_gap_text(gap)}  {verdict(row)}"
        )
        lines.append(line.rstrip())
        indent = " " * 8
        if gap and gap.get("paired"):
            paired = gap["paired"]
            differences = " ".join(f"{d:+.2f}" for d in paired["differences"])
            line = f"{indent}per-seed differences (seeds {paired['seeds']}): {differences}"
            if paired["bootstrap_ci95"]:
                b_low, b_high = paired["bootstrap_ci95"]
                line += f"; bootstrap 95% CI [{b_low:+.2f}, {b_high:+.2f}]"
            lines.append(line)
        elif gap and row["mode"] == ZERO_SHOT:
            lines.append(f"{indent}(vs scratch at {gap['scratch_demos']} demos, pooled only)")
        to_mode = row.get("gap_to_mode")
        if to_mode:
            line = f"{indent}vs {to_mode['mode']}: {_gap_text(to_mode)}"
            if to_mode.get("paired"):
                differences = " ".join(f"{d:+.2f}" for d in to_mode["paired"]["differences"])
                line += f"; per-seed differences {differences}"
            lines.append(line)
        if len(row["per_task"]) > 1:
            for task, entry in row["per_task"].items():
                rate = f"{entry['successes']}/{entry['episodes']} ({entry['success_rate']:.2f})"
                task_gap = _gap_text(entry.get("gap_to_scratch"))
                if entry.get("gap_to_mode"):
                    task_gap += f"  vs {to_mode['mode']} {_gap_text(entry['gap_to_mode'])}"
                lines.append(f"{indent}{task:<22}{rate:<16}{task_gap}".rstrip())
    return "\n".join(lines)


def json_line(rows: Sequence[dict[str, Any]], **context: Any) -> str:
    """The benchmark's one JSON line: the context (budget, seeds, pretrained checkpoint) + rows."""
    return json.dumps({**context, "rows": list(rows)}, sort_keys=True)

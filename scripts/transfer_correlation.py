"""Which offline number predicts closed-loop success, over the saved arms of several transfer
benchmark runs (each arm's JSON keeps the offline numbers of the checkpoint it evaluated).

    python scripts/transfer_correlation.py docs/benchmarks/arms/issue67_octo_metric7_50 \
        docs/benchmarks/arms/issue67_own_metric7_50 [more arm folders...] [--json out.json]

Prints Spearman's rho of each offline metric with success (95% bootstrap interval over arms)
over all arms, then within each target, mode (fine-tuned or scratch), recipe (folder) and
target and mode together, so a
correlation that only separates fine-tuned from scratch arms shows as such. Losses of runs
with Octo's summed loss (``loss_scale="action_dim"``) are divided by the action dim first.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="folders holding saved arm results (seed*.json)")
    parser.add_argument("--json", default=None, help="also write the tables as JSON here")
    return parser.parse_args(argv)


def per_dim_losses(arm: dict) -> dict:
    """The arm with its losses on the per-dimension (mean) scale: a run with Octo's
    ``loss_scale="action_dim"`` sums over the A action dims, so its losses are divided by A
    (read from its command) to be ranked beside runs that average."""
    command = " ".join(arm.get("command", []))
    if "'loss_scale': 'action_dim'" not in command or not arm.get("offline"):
        return arm
    dims = [
        a.split("=", 1)[1] for a in arm["command"] if a.startswith("--config.model.action_dim=")
    ]
    if not dims:
        raise ValueError(f"{arm['target']} seed {arm['seed']}: summed loss but no action_dim")
    offline = dict(arm["offline"])
    for key in ("loss", "train_loss"):
        if key in offline:
            offline[key] = offline[key] / int(dims[-1])
    return {**arm, "offline": offline}


def read_arms(folders) -> list[dict]:
    """Every saved fine-tuning arm (zero-shot rows have no offline numbers and are left out),
    with the folder it came from as ``recipe`` and its losses per action dim."""
    arms = []
    for folder in folders:
        for path in sorted(pathlib.Path(folder).rglob("seed*.json")):
            arm = json.loads(path.read_text())
            if arm.get("mode") in (None, "zero_shot"):
                continue
            arms.append(per_dim_losses({**arm, "recipe": pathlib.Path(folder).name}))
    return arms


def main(argv=None) -> dict:
    args = parse_args(argv)
    from octo_like.envs.transfer.transfer_offline import correlation_text, offline_correlations

    arms = read_arms(args.folders)
    groups = {"all arms": arms}
    for key in ("target", "mode", "recipe"):
        for value in sorted({a[key] for a in arms}):
            groups[f"{key} = {value}"] = [a for a in arms if a[key] == value]
    for target, mode in sorted({(a["target"], a["mode"]) for a in arms}):
        members = [a for a in arms if (a["target"], a["mode"]) == (target, mode)]
        groups[f"target = {target}, mode = {mode}"] = members
    tables = {}
    for name, members in groups.items():
        successes = [
            sum(c[0] for c in a["per_task"].values()) / sum(c[1] for c in a["per_task"].values())
            for a in members
        ]
        spread = f"success {min(successes):.2f}-{max(successes):.2f}" if successes else ""
        print(f"\n{name}: {len(members)} arms, {spread}")
        tables[name] = offline_correlations(members)
        print(correlation_text(tables[name]))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(tables, indent=1) + "\n")
    return tables


if __name__ == "__main__":
    main()

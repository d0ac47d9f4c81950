"""Training and validation curves of a run, from its ``metrics.jsonl``.

    python scripts/plot_metrics.py WORKDIR --out curves.png [--metrics loss,mse] [--logy]

One panel per metric, one line per split (train, val, ...). By default: every metric whose name
contains "loss", then every metric logged by more than one split; a run with a single split
gets all of its metrics.
"""

from __future__ import annotations

import argparse
import math
import os

from octo_like.training.run.metrics import METRICS_FILE, read_jsonl

MAX_PANELS = 12


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", help=f"run directory holding {METRICS_FILE}")
    parser.add_argument("--out", default="curves.png", help="output image (PNG)")
    parser.add_argument("--metrics", default="", help="comma-separated metric names to plot")
    parser.add_argument("--logy", action="store_true", help="logarithmic y axis")
    return parser.parse_args(argv)


def series(entries: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{metric: {split: (steps, values)}} keeping only finite numbers."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for entry in entries:
        split = entry.get("split", "train")
        for key, value in entry.items():
            if key in ("step", "split", "time") or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            steps, values = out.setdefault(key, {}).setdefault(split, ([], []))
            steps.append(int(entry["step"]))
            values.append(float(value))
    return out


def choose_metrics(data: dict, requested: list[str]) -> list[str]:
    if requested:
        unknown = [m for m in requested if m not in data]
        if unknown:
            raise SystemExit(f"unknown metrics {unknown}; logged: {sorted(data)}")
        return requested
    losses = sorted(k for k in data if "loss" in k)
    shared = sorted(k for k in data if len(data[k]) > 1 and k not in losses)
    chosen = losses + shared
    if len({split for per_split in data.values() for split in per_split}) <= 1:
        chosen += sorted(k for k in data if k not in chosen)
    return (chosen or sorted(data))[:MAX_PANELS]


def plot(data: dict, metrics: list[str], out: str, logy: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.5 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for split, (steps, values) in sorted(data[metric].items()):
            style = "-" if split == "train" else "o-"
            ax.plot(steps, values, style, label=split, markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("step")
        if logy and all(v > 0 for _, values in data[metric].values() for v in values):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    path = os.path.join(args.workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"no metrics file {path}: is {args.workdir!r} a training workdir?")
    data = series(read_jsonl(path))
    if not data:
        raise SystemExit(f"{path} holds no numeric metrics yet")
    requested = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = choose_metrics(data, requested)
    plot(data, metrics, args.out, args.logy)
    print(f"wrote {args.out}: {', '.join(metrics)}")
    return metrics


if __name__ == "__main__":
    main()

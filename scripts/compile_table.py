"""Run the compile check over presets x topologies and print the docs' markdown table.

    python scripts/compile_table.py --presets small base \
        --topologies v4:4x4x2 v4:4x4x4 v5e:16x16 v5p:4x4x4 v4:4x4x2x2

A topology written ``NAME`` + ``xK`` after its shape (``v4:4x4x2x2`` is not a libtpu name; this
script reads a trailing ``xK`` beyond the generation's rank as K slices) compiles K slices over
DCN. Each row is one fresh ``scripts/compile_check.py`` process (libtpu's compiler keeps memory
between compiles); the rows are the figures of its final JSON line, nothing else. Extra flags
after ``--`` go to every check (e.g. ``-- --config.data.batch_size=1024``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

CHECK = pathlib.Path(__file__).resolve().parent / "compile_check.py"
GIB = 2**30
MIB = 2**20
RANK = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2}  # chip-grid axes per generation
SLICE_NAMES = {"v4": "v4-{}", "v5p": "v5p-{}", "v5e": "v5e-{}", "v6e": "v6e-{}"}
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}  # v4-N / v5p-N count TensorCores


def split_topology(text: str) -> tuple[str, int]:
    """'v4:4x4x2x2' -> ('v4:4x4x2', 2); 'v5e:16x16' -> ('v5e:16x16', 1)."""
    generation, _, shape = text.partition(":")
    axes = shape.split("x")
    rank = RANK.get(generation)
    if rank is None or len(axes) not in (rank, rank + 1):
        raise SystemExit(f"compile table: cannot read topology {text!r}")
    slices = int(axes[rank]) if len(axes) > rank else 1
    return f"{generation}:{'x'.join(axes[:rank])}", slices


def slice_name(topology: str, slices: int) -> str:
    generation, _, shape = topology.partition(":")
    chips = 1
    for axis in shape.split("x"):
        chips *= int(axis)
    name = SLICE_NAMES[generation].format(chips * CORES_PER_CHIP[generation])
    return f"{slices} x {name} (`{topology}` x{slices})" if slices > 1 else f"{name} (`{topology}`)"


def run_check(preset: str, topology: str, slices: int, extra: list[str]) -> dict:
    command = [sys.executable, str(CHECK), "--topology", topology, "--num_slices", str(slices)]
    command += ["--", "--config", f"configs/pretrain.py:{preset},oxe_magic_soup", *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=CHECK.parents[1])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode not in (0, 3) or not lines:
        raise SystemExit(f"compile table: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def collectives_cell(collectives: dict) -> str:
    """'all-reduce 268 (f32 268, s32 1) 99 MiB; ...' for every kind the step runs."""
    cells = []
    for kind, entry in sorted(collectives.items()):
        dtypes = ", ".join(f"{d} {n}" for d, n in sorted(entry["by_dtype"].items()))
        cells.append(f"{kind} {entry['count']} ({dtypes}) {entry['bytes'] / MIB:.0f} MiB")
    return "; ".join(cells) or "none"


def row(preset: str, topology: str, slices: int, report: dict) -> str:
    memory = report["memory"]
    grads = ", ".join(f"{d} {n}" for d, n in sorted(report["gradient_reductions"].items()))
    hbm = "?" if report["hbm_bytes"] is None else f"{report['hbm_bytes'] / GIB:.0f} GiB"
    fits = {True: "yes", False: "**no**", None: "?"}[report["fits"]]
    ideal = report["ideal_step_s"]
    mesh = report["mesh"]
    return (
        f"| {preset} | {slice_name(topology, slices)} | {report['chips']} / {report['hosts']} "
        f"| {mesh.get('data', 1)}, {mesh.get('fsdp', 1)} "
        f"| {memory['total'] / GIB:.1f} GiB ({memory['arguments'] / GIB:.2f} + "
        f"{memory['temporaries'] / GIB:.1f} + {memory['code'] / GIB:.2f}) | {hbm} | {fits} "
        f"| {collectives_cell(report['collectives'])} | {grads or 'decomposed'} "
        f"| {'?' if ideal is None else f'{ideal * 1e3:.1f} ms'} "
        f"| {report['xla_flops'] / report['analytic_flops'] - 1:+.1%} "
        f"| {report['compile_s']:.0f} s |"
    )


HEADER = (
    "| preset | slice (`--topology`) | chips / hosts | mesh (data, fsdp) "
    "| memory per chip (args + temps + code) | HBM | fits "
    "| collectives per step (arrays by dtype, bytes) | parameter-shaped gradient sums "
    "| ideal step | XLA vs analytic FLOPs | compile |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None):
    """(own arguments, flags passed to every check after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument(
        "--topologies",
        nargs="+",
        default=["v4:4x4x2", "v4:4x4x4", "v5e:16x16", "v5p:4x4x4", "v4:4x4x2x2"],
    )
    return parser.parse_args(own), extra


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    targets = [split_topology(t) for t in args.topologies]
    print(HEADER, flush=True)
    for preset in args.presets:
        for topology, slices in targets:
            report = run_check(preset, topology, slices, extra)
            print(row(preset, topology, slices, report), flush=True)


if __name__ == "__main__":
    main()

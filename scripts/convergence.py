"""Did this change alter what training learns? Runs configs/convergence.py's fixed pretraining
on the committed Bridge shard and compares its loss curve with the reference band.

    python scripts/convergence.py check --preset full            # make convergence
    python scripts/convergence.py check --preset quick --seed 0  # what make test runs
    python scripts/convergence.py measure --preset full --seeds 0,1,2,3,4,5,6,7,8,9 \
        --reason "why the reference moves (the commit that moved it says what changed)"
    python scripts/convergence.py check --preset quick --set optimizer.warmup_steps=0

`check` exits 1, with the points outside the band and their values, when the run left the
band; `measure` runs every seed and writes configs/convergence_reference/<preset>.json (commit
it with the change that moved the curve). `--set KEY=VALUE` (a Python literal) changes the run,
e.g. to see which regressions the band catches. The band's statistics are in
octo_like/training/benchmarks/convergence.py.
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
REFERENCES = REPO / "configs" / "convergence_reference"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("check", "measure"))
    parser.add_argument("--preset", default="full")
    parser.add_argument("--seed", type=int, default=0, help="check: the run's seed")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="measure: the band's seeds")
    parser.add_argument("--alpha", type=float, default=0.05, help="measure: false-alarm rate")
    parser.add_argument("--reason", default="", help="measure: why the reference is (re)made")
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA), help="holds bridge_dataset/")
    parser.add_argument("--reference", default="", help="default: configs/convergence_reference")
    parser.add_argument("--workdir", default="", help="default: a temporary directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--compilation_cache", default="", help="a shared XLA cache directory")
    return parser.parse_args(argv)


def bridge_instructions(data_dir: str) -> list[str]:
    """The shard's distinct language instructions, in first-seen order."""
    from octo_like.data import builder_dir, rlds

    builder = builder_dir.open_builder(os.path.join(data_dir, "bridge_dataset", "1.0.0"))
    seen: dict[str, None] = {}
    for split in ("train", "val"):
        for traj in rlds.read_episodes(builder, split, shuffle_files=False):
            for text in traj["language_instruction"].numpy():
                seen.setdefault(text.decode(), None)
    return list(seen)


def apply_overrides(config, assignments: list[str]) -> None:
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value  # a locked config: a typo'd key raises, naming close keys


def run_seed(args, seed: int, root: pathlib.Path) -> dict[str, float]:
    """Trains the preset at `seed` in root/seed<seed>; returns its curve."""
    import train
    from configs import convergence as presets
    from octo_like.model.language.vocabulary import write_embedded_tokenizer
    from octo_like.training.benchmarks.convergence import curve_from_metrics
    from octo_like.training.run.metrics import read_jsonl

    tokenizer = root / "tokenizer"
    if not (tokenizer / "spiece.model").exists():
        write_embedded_tokenizer(str(tokenizer), bridge_instructions(args.data_dir))
    config = presets.get_config(args.preset)
    config.seed = seed
    config.data_dir = args.data_dir
    config.data.statistics_cache_dir = str(root / "statistics")
    config.model.language.checkpoint_dir = str(tokenizer)
    config.compilation_cache = args.compilation_cache or str(root / "xla_cache")
    apply_overrides(config, args.set)
    workdir = root / f"seed{seed}"
    train.main(config, str(workdir))
    rows = read_jsonl(str(workdir / "metrics.jsonl"))
    window = config.num_steps // 6
    return curve_from_metrics(rows, config.num_steps, window)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from octo_like.envs.transfer.provenance import current
    from octo_like.training.benchmarks.convergence import (
        Reference,
        check_curve,
        describe,
        measure_reference,
    )

    references = pathlib.Path(args.reference or REFERENCES)
    path = references / f"{args.preset}.json" if references.suffix != ".json" else references
    with tempfile.TemporaryDirectory(prefix="convergence-") as scratch:
        root = pathlib.Path(args.workdir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        if args.command == "measure":
            seeds = [int(s) for s in args.seeds.split(",")]
            curves = {}
            for seed in seeds:
                curves[seed] = run_seed(args, seed, root)
                print(f"seed {seed}: {curves[seed]}", flush=True)
            made = current()
            changes = f" with {args.set}" if args.set else ""
            reference = measure_reference(
                args.preset, made["commit"], made["cpu"], curves, args.alpha,
                args.reason + changes,
            )  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(reference.to_json())
            print(f"wrote {path}: band at {reference.multiplier:.2f} sd over {len(seeds)} seeds")
            return 0
        reference = Reference.from_json(path.read_text(), str(path))
        curve = run_seed(args, args.seed, root)
    verdict = check_curve(curve, args.seed, reference)
    print(
        f"convergence check, preset {args.preset}, seed {args.seed}, changes {args.set or 'none'}"
    )
    print(f"reference: {path} ({reference.commit}, {reference.machine}, "
          f"{len(reference.curves)} seeds, band {reference.multiplier:.2f} sd)")  # fmt: skip
    print(describe(curve, verdict, reference))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())

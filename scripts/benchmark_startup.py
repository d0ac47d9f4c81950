"""Time to the first training step, by phase, on the dress rehearsal's data: the 25 datasets of
`oxe_magic_soup` written as fixtures with each member's published feature schema, a tiny frozen
T5, one process. Launches train.py twice on one workdir (a fresh start, then a resume from the
first launch's checkpoint) and prints the line each run logs at its first step:

    python scripts/benchmark_startup.py --preset base --workdir /tmp/startup
    python scripts/benchmark_startup.py --preset base --workdir /tmp/startup --repo ../old_checkout

`--repo` times another checkout's train.py on the same data (a before/after on one machine).
The first launch computes the statistics (a cache miss), the second reads them and the step
from the compilation cache: a preempted pod slice restarts like the second. The line's total
ends when the first step is dispatched; the step's own run (the model's FLOPs: ~30 s for `base`
at batch 8 on a 2-core CPU) follows it as "the first step ran". Checkouts before 2c3f1d0 count
that run in their "step compile" phase: subtract their second step's time (`perf/step_s` of
step 2 in the run's metrics.jsonl) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fixture schemas live with the tests

MIX = "oxe_magic_soup"


def write_fixtures(directory: pathlib.Path) -> None:
    """The mix's datasets (2 short episodes each, real schemas) and a tiny T5, once."""
    from octo_like.data.oxe.mixes import MIXES
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from tests.data.oxe_cases import write_mix_datasets

    done = directory / "written"
    if done.exists():
        return
    write_mix_datasets(str(directory / "data"), MIXES[MIX])
    write_tiny_t5_checkpoint(str(directory / "t5"))
    done.touch()


def launch(repo: pathlib.Path, fixtures: pathlib.Path, workdir: pathlib.Path, preset: str,
           step: int, log: pathlib.Path) -> str:  # fmt: skip
    """One train.py run to `step`; its 'time to first step' line and its last step's time."""
    flags = [
        "--config", f"{repo / 'configs/pretrain.py'}:{preset},{MIX}",
        "--workdir", str(workdir),
        f"--config.data_dir={fixtures / 'data'}",
        f"--config.model.language.checkpoint_dir={fixtures / 't5'}",
        f"--config.data.statistics_cache_dir={workdir / 'stats'}",
        "--config.data.batch_size=8", "--config.data.shuffle_buffer=1000",
        "--config.log_every=1", "--config.checkpoint.save_every=1000",  # saved at the stop
        "--config.num_steps=100", "--config.val_split=", "--config.tensorboard=False",
        f"--stop_at_step={step}",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(repo)}
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(
            [sys.executable, str(repo / "train.py"), *flags],
            env=env, cwd=repo, stdout=out, stderr=subprocess.STDOUT, check=False,
        ).returncode  # fmt: skip
    text = log.read_text()
    if code != 0:
        sys.exit(f"train.py exited {code}; its log: {log}\n{text[-3000:]}")
    lines = [line for line in text.splitlines() if "time to first step" in line]
    if not lines:
        sys.exit(f"{repo / 'train.py'} logs no 'time to first step' line (see {log})")
    wall = time.monotonic() - started
    line = lines[0][lines[0].index("time to first step") :]
    logged = [json.loads(row) for row in (workdir / "metrics.jsonl").read_text().splitlines()]
    step_s = [row["perf/step_s"] for row in logged if row.get("step") == step][-1]
    report = f"{line} (process wall {wall:.1f} s); step {step} took {step_s:.1f} s"
    if "the first step ran" not in line:  # an older line: its step compile includes the run
        total = float(line.split()[4])
        report += f"; total less that step {total - step_s:.1f} s"
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", help="tiny, small or base")
    parser.add_argument("--workdir", required=True, help="fixtures, run and logs go here")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose train.py runs")
    parser.add_argument("--no_resume", action="store_true", help="time the fresh start only")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    root = pathlib.Path(args.workdir).resolve()
    fixtures = root / "fixtures"
    write_fixtures(fixtures)
    run = root / "run"
    shutil.rmtree(run, ignore_errors=True)
    repo = pathlib.Path(args.repo).resolve()
    print(f"{args.preset}, {MIX} (25 datasets), one process, {repo}:")
    print("fresh: " + launch(repo, fixtures, run, args.preset, 2, root / "fresh.log"))
    if not args.no_resume:  # from the checkpoint of step 2
        print("resume: " + launch(repo, fixtures, run, args.preset, 4, root / "resume.log"))


if __name__ == "__main__":
    main()

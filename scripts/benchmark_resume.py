"""What a kill -9 and a resume do to a run's loss curve, against what another data order and
another seed do (issue 70: is an exact replay of the data order worth building?).

    python scripts/benchmark_resume.py --workdir runs/resume \
        --config configs/pretrain.py:laptop --kill_at_step 150 [--set KEY=VALUE ...]

Four runs of one train.py command, each its own process: `straight` uninterrupted;
`killed`, SIGKILLed once it has logged `--kill_at_step` and rerun (it resumes from its last
complete checkpoint, re-seeding the data stream from that step: the same parameters there,
other batches after); `seed1` and `seed2`, with `--config.seed` 1 and 2 (another
initialization and data order: the spread a resume is compared with). Prints,
for each against `straight`, the mean absolute difference of the training loss over the
steps after the resume, of the windowed loss curve, the final validation loss, and the relative
L2 distance of the final parameters.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default="configs/pretrain.py:laptop")
    parser.add_argument("--kill_at_step", type=int, default=150)
    parser.add_argument("--window", type=int, default=25, help="steps per curve point")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def command(args, workdir: pathlib.Path, extra: list[str]) -> list[str]:
    sets = [f"--config.{assignment}" for assignment in args.set]
    return [sys.executable, str(REPO / "train.py"), "--config", args.config,
            f"--workdir={workdir}", "--config.log_every=1", *sets, *extra]  # fmt: skip


def complete_steps(checkpoints: pathlib.Path) -> list[int]:
    """The steps whose save finished (none before the run made its checkpoint directory)."""
    from octo_like.model.checkpoint_layout import finished_steps

    return finished_steps(str(checkpoints)) if checkpoints.is_dir() else []


def logged_steps(workdir: pathlib.Path) -> int:
    """The last step a live run logged (its metrics file may end in a torn line meanwhile)."""
    from octo_like.training.run.metrics import read_jsonl

    path = workdir / "metrics.jsonl"
    return max((row["step"] for row in read_jsonl(str(path))), default=0) if path.exists() else 0


def run_killed(args, workdir: pathlib.Path) -> int:
    """Runs, SIGKILLs at --kill_at_step, reruns to the end; returns the step it resumed from."""
    child = subprocess.Popen(command(args, workdir, []), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while logged_steps(workdir) < args.kill_at_step:
            if child.poll() is not None:
                raise SystemExit(f"the run ended (status {child.returncode}) before the kill")
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)  # JAX ignores SIGTERM
        child.wait()
    saved = complete_steps(workdir / "checkpoints")
    if not saved:
        raise SystemExit(f"no complete checkpoint before step {args.kill_at_step}")
    subprocess.run(command(args, workdir, []), cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return saved[-1]


def rows(workdir: pathlib.Path):
    """(step -> training loss, the last run's rows winning; the final validation loss)."""
    from octo_like.training.run.metrics import read_jsonl

    train, val = {}, None
    for row in read_jsonl(str(workdir / "metrics.jsonl")):
        if row.get("split", "train") == "train":
            train[row["step"]] = row["loss"]
        elif row.get("split") == "val":
            val = row["loss"]
    return train, val


def final_params(workdir: pathlib.Path):
    import jax
    import numpy as np
    from flax import nnx

    from octo_like.model.octo_model import OctoModel

    model = OctoModel.load_pretrained(str(workdir / "checkpoints"))
    leaves = jax.tree.leaves(nnx.state(model.module, nnx.Param).to_pure_dict())
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in leaves])


def main(argv=None) -> None:
    import numpy as np

    args = parse_args(argv)
    root = pathlib.Path(args.workdir)
    runs = {"straight": [], "seed1": ["--config.seed=1"], "seed2": ["--config.seed=2"]}
    timings = {}
    for name, extra in runs.items():
        if not complete_steps(root / name / "checkpoints"):
            start = time.monotonic()
            subprocess.run(command(args, root / name, extra), cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            timings[name] = time.monotonic() - start
    resumed_from = run_killed(args, root / "killed")
    straight, straight_val = rows(root / "straight")
    reference = final_params(root / "straight")
    last = max(straight)
    after = [s for s in straight if s > resumed_from]
    print(f"config {args.config} {args.set}; killed at step {args.kill_at_step}, resumed from "
          f"{resumed_from}; {last} steps; run times {timings}")  # fmt: skip
    print(f"straight: final validation loss {straight_val:.4f}, mean training loss over steps "
          f"{resumed_from + 1}-{last} {np.mean([straight[s] for s in after]):.4f}")  # fmt: skip
    windows = range(resumed_from, last, args.window)
    header = "against straight       mean |d loss|  mean |d window|  d val loss  param distance"
    print(header)
    for name in ("killed", "seed1", "seed2"):
        losses, val = rows(root / name)
        step_diff = np.mean([abs(losses[s] - straight[s]) for s in after])
        curve = lambda d: [np.mean([d[s] for s in after if w < s <= w + args.window])  # noqa: E731
                           for w in windows]  # fmt: skip
        window_diff = np.mean(np.abs(np.subtract(curve(losses), curve(straight))))
        params = final_params(root / name)
        distance = np.linalg.norm(params - reference) / np.linalg.norm(reference)
        print(f"{name:<22} {step_diff:>13.4f}  {window_diff:>15.4f}  {val - straight_val:>+10.4f}"
              f"  {distance:>14.2e}")  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of the loaded checkpoints' threads


if __name__ == "__main__":
    main()

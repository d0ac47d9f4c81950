"""A re-runnable hostile-user drill (issue 31): bad data, corrupted checkpoints, kills and
signals, wrong configs, two runs on one workdir and abusive server clients, each run against the
landed code in a fresh subprocess and its outcome classified.

    python scripts/failure_drill.py                         # every case (minutes)
    python scripts/failure_drill.py [--only server] [--timeout 240] [--workdir /tmp/drill] [--keep]
    python scripts/failure_drill.py --list

Each case declares its good outcome; what happened is one of:
  named        the documented error (an octo_like exception, or a non-zero exit status of a
               script) whose message names the field / file / dataset / episode
  skipped      with skipping on, the bad item is dropped AND counted / reported
  none-needed  correct output, no error needed
  raw          a library exception (tf / orbax / json / zipfile / KeyError ...) or the project's
               without the naming
  silent       finished with a wrong or unreported result (NaN action, stretched image, no warning)
  crash        hung past --timeout (SIGKILLed: JAX ignores SIGTERM), died of a signal, or an
               unexpected traceback
  data-loss    data lost (e.g. metrics of finished steps missing)
named / skipped / none-needed are "handled"; the rest are findings. Shared fixtures (a tiny
checkpoint, its tokenizer) are built once in a temp dir (kept with --keep or --workdir); the
Bridge shard in ../shared is only ever copied. Prints a table (id, category, outcome, evidence),
the counts, and one JSON line last.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from drill_cases import CASES, common  # noqa: E402

RESULT_TAG = "DRILL-RESULT "
SETUP_TIMEOUT_S = 600


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="cases whose id or category contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per case")
    parser.add_argument("--workdir", default=None, help="fixtures and scratch (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir")
    parser.add_argument("--run-case", default=None, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(only: str | None) -> list[common.Case]:
    return [
        c for c in CASES.values() if only is None or only in c.id or only in c.category
    ]  # fmt: skip


def _child(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """(returncode or None on timeout, stdout, stderr, seconds); SIGKILL on timeout."""
    env = {**os.environ, "PYTHONPATH": str(common.REPO), "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve()), *args], cwd=common.REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = child.communicate(timeout=timeout)
        code = child.returncode
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)  # the case's own process group: JAX ignores SIGTERM
        out, err = child.communicate()
        code = None
    return code, out, err, time.monotonic() - start


def run_case(case: common.Case, workdir: pathlib.Path, timeout: float) -> dict:
    code, out, err, seconds = _child(["--run-case", case.id, "--workdir", str(workdir)], timeout)
    row = {"id": case.id, "category": case.category, "good": case.good, "seconds": seconds}
    results = [line for line in out.splitlines() if line.startswith(RESULT_TAG)]
    if results:
        row.update(json.loads(results[-1][len(RESULT_TAG) :]))
    elif code is None:
        row.update(outcome="crash", evidence=f"no result within {timeout:.0f} s (SIGKILLed)")
    elif code < 0:
        row.update(outcome="crash", evidence=f"died of signal {-code}")
    else:
        tail = [line for line in err.splitlines() if line.strip()][-1:] or ["(no output)"]
        row.update(outcome="crash", evidence=common.one_line(f"exit {code}: {tail[0]}"))
    return row


def child_main(case_id: str, workdir: pathlib.Path) -> int:
    """Runs one case in this process and prints its classified result."""
    case = CASES[case_id]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{case_id}-", dir=workdir / "cases"))
    try:
        outcome, evidence = case.run(common.Context(workdir, tmp))
    except Exception as error:  # noqa: BLE001 - an unexpected traceback is the finding
        import traceback

        traceback.print_exc()
        outcome, evidence = "crash", common.one_line(f"{type(error).__name__}: {error}")
    assert outcome in common.OUTCOMES, outcome
    print(RESULT_TAG + json.dumps({"outcome": outcome, "evidence": evidence}), flush=True)
    return 0


def setup_main(workdir: pathlib.Path) -> int:
    """The shared fixtures: a tiny random checkpoint at step 3 with its T5 tokenizer."""
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from tests.inference.conftest import host_initialized_model, tiny_config

    language = write_tiny_t5_checkpoint(str(workdir / "t5"))
    host_initialized_model(tiny_config(language)).save_pretrained(3, str(workdir / "checkpoints"))
    (workdir / "setup.done").write_text("ok")
    return 0


def print_table(rows: list[dict]) -> collections.Counter:
    print(f"{'case':34} {'category':11} {'good':11} {'outcome':11} evidence")
    for row in rows:
        flag = "" if row["outcome"] in common.GOOD else "!"
        print(
            f"{row['id']:34} {row['category']:11} {row['good']:11} "
            f"{flag + row['outcome']:11} {row['evidence']}"
        )
    counts = collections.Counter(row["outcome"] for row in rows)
    print("counts: " + " / ".join(f"{k} {counts.get(k, 0)}" for k in common.OUTCOMES))
    return counts


def drill(cases: list[common.Case], workdir: pathlib.Path, timeout: float) -> list[dict]:
    (workdir / "cases").mkdir(parents=True, exist_ok=True)
    if not (workdir / "setup.done").exists():
        code, _, err, _ = _child(["--setup", "--workdir", str(workdir)], SETUP_TIMEOUT_S)
        if code != 0:
            raise SystemExit(f"fixture setup failed (exit {code}):\n{err[-3000:]}")
    rows = []
    for case in cases:
        rows.append(run_case(case, workdir, timeout))
        row = rows[-1]
        print(f"[{row['seconds']:5.1f}s] {row['id']}: {row['outcome']}", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_case:
        return child_main(args.run_case, pathlib.Path(args.workdir))
    if args.setup:
        return setup_main(pathlib.Path(args.workdir))
    cases = selected(args.only)
    if args.list:
        for c in cases:
            print(f"{c.id:34} {c.category:11} good={c.good}")
        return 0
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="failure-drill-"))
    start = time.monotonic()
    try:
        rows = drill(cases, workdir, args.timeout)
    finally:
        if not (args.keep or args.workdir):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    counts = print_table(rows)
    wall = time.monotonic() - start
    print(f"wall time {wall:.0f} s, {len(rows)} cases" + (f", kept {workdir}" if args.keep else ""))
    summary = {"cases": len(rows), "wall_s": round(wall, 1), "counts": dict(counts)}
    summary["outcomes"] = {row["id"]: row["outcome"] for row in rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

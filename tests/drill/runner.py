"""The failure drill's runner: each case in a fresh subprocess (`tests.drill.child`) with a
time limit, its outcome read back or classified from how the process ended, then the table,
the counts and one JSON line. Shared fixtures (a tiny checkpoint, its tokenizer) are built once
per drill workdir, also in a subprocess."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from tests.drill import CASES
from tests.drill.common import GOOD, OUTCOMES, REPO, RESULT_TAG, Case, one_line

SETUP_TIMEOUT_S = 600


def selected(only: str | None) -> list[Case]:
    """The cases whose id or category contains `only` (every case for None)."""
    return [
        c for c in CASES.values() if only is None or only in c.id or only in c.category
    ]  # fmt: skip


def _child(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """(returncode or None on timeout, stdout, stderr, seconds); SIGKILL on timeout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.drill.child", *args], cwd=REPO, env=env,
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


def run_case(case: Case, workdir: pathlib.Path, timeout: float) -> dict:
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
        row.update(outcome="crash", evidence=one_line(f"exit {code}: {tail[0]}"))
    return row


def print_table(rows: list[dict]) -> collections.Counter:
    print(f"{'case':34} {'category':11} {'good':11} {'outcome':11} evidence")
    for row in rows:
        flag = "" if row["outcome"] in GOOD else "!"
        print(
            f"{row['id']:34} {row['category']:11} {row['good']:11} "
            f"{flag + row['outcome']:11} {row['evidence']}"
        )
    counts = collections.Counter(row["outcome"] for row in rows)
    print("counts: " + " / ".join(f"{k} {counts.get(k, 0)}" for k in OUTCOMES))
    return counts


def drill(cases: list[Case], workdir: pathlib.Path, timeout: float) -> list[dict]:
    """Runs `cases` one after another (fixtures first, unless `workdir` has them): a row each."""
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


def list_cases(cases: list[Case]) -> None:
    for c in cases:
        print(f"{c.id:34} {c.category:11} good={c.good}")


def run_and_report(cases: list[Case], workdir: str | None, timeout: float, keep: bool) -> dict:
    """The drill over `cases` in `workdir` (a temp dir, removed unless `keep`), printed as the
    table, the counts, the wall time and one JSON line (also returned)."""
    root = pathlib.Path(workdir or tempfile.mkdtemp(prefix="failure-drill-"))
    start = time.monotonic()
    try:
        rows = drill(cases, root, timeout)
    finally:
        if not (keep or workdir):
            shutil.rmtree(root, ignore_errors=True)
    counts = print_table(rows)
    wall = time.monotonic() - start
    print(f"wall time {wall:.0f} s, {len(rows)} cases" + (f", kept {root}" if keep else ""))
    summary = {"cases": len(rows), "wall_s": round(wall, 1), "counts": dict(counts)}
    summary["outcomes"] = {row["id"]: row["outcome"] for row in rows}
    print(json.dumps(summary))
    return summary

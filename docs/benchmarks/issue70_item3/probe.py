"""Issue 70 item 3: which commits change what training computes? Training is deterministic on one
machine (item 1), so a commit either repeats its parent's first 100 steps bit for bit or it
changes values. Probe = the laptop_broad command's mean training loss over steps 1-100 (and the
grad and param norms) at seed 0, from one worktree checked out at each commit in turn.
Change points between two commits are found by binary search on equality.

    python docs/benchmarks/issue70_item3/probe.py FIRST LAST   # e.g. 6f789e1 fb54088

WT (a `git worktree add --detach` of this repository), OUT (the probes, one JSON line each,
reused when the search runs again), the venv's python and the demonstration cache below are the
paths of the 2026-11-29 sitting."""

import json
import os
import subprocess
import sys
import time

WT = "/work/i70_bisect/wt"
OUT = "/work/i70_bisect/probes.jsonl"
HELD = "family:door,family:coffee,family:plate,family:window,family:faucet"


def probes():
    if not os.path.exists(OUT):
        return {}
    return {r["commit"]: r for r in map(json.loads, open(OUT))}


def probe(commit):
    known = probes()
    if commit in known:
        return known[commit]
    subprocess.run(["git", "-C", WT, "checkout", "-q", "--detach", commit], check=True)
    workdir = f"/work/i70_bisect/runs/{commit[:10]}"
    subprocess.run(["rm", "-rf", workdir], check=True)
    command = [
        "/work/main/.venv/bin/python", "train.py", "--config", "configs/pretrain.py:laptop_broad",
        "--workdir", workdir, f"--config.simulation.held_out={HELD}",
        "--config.simulation.cache_dir=/work/i70_cache", "--config.seed=0",
        "--stop_at_step", "100",
    ]  # fmt: skip
    start = time.time()
    with open(workdir + ".log", "w") as log:
        proc = subprocess.Popen(command, cwd=WT, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(5)
            with open(workdir + ".log") as text:
                if "collecting metaworld" in text.read():  # a cache miss: 23 minutes, not 2
                    proc.kill()
                    proc.wait()
                    break
    rec = {"commit": commit, "error": f"exit {proc.returncode} (a cache miss recollects)"}
    if proc.returncode == 0:
        with open(workdir + "/metrics.jsonl") as rows:
            train = [r for r in map(json.loads, rows) if r["split"] == "train"]
        row = next((r for r in train if r["step"] == 100), None)
        if row is not None:
            values = {k: row[k] for k in ("loss", "grad_norm", "param_norm")}
            rec = {"commit": commit, **values, "seconds": round(time.time() - start)}
    with open(OUT, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(rec, flush=True)
    return rec


def key(rec):
    return None if "error" in rec else (rec["loss"], rec["grad_norm"], rec["param_norm"])


def change_points(commits):
    """Commits whose probe differs from their predecessor's in the list (binary search)."""
    found = []
    lo = 0
    hi = len(commits) - 1
    while key(probe(commits[lo])) != key(probe(commits[hi])):
        a, b = lo, hi  # probe(a) != probe(b): find the first index in (a, b] that differs from a
        while b - a > 1:
            mid = (a + b) // 2
            if key(probe(commits[mid])) == key(probe(commits[a])):
                a = mid
            else:
                b = mid
        found.append(commits[b])
        print("CHANGE at", commits[b], flush=True)
        lo = b
    return found


if __name__ == "__main__":
    first, last = sys.argv[1], sys.argv[2]
    commits = subprocess.run(
        ["git", "-C", WT, "rev-list", "--reverse", "--first-parent", f"{first}^..{last}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(len(commits), "commits", flush=True)
    print("change points:", change_points(commits), flush=True)

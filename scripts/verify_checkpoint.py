"""Checks a checkpoint directory's files against their checksums, without loading a model.

    python scripts/verify_checkpoint.py runs/laptop/checkpoints            # every step
    python scripts/verify_checkpoint.py runs/laptop/checkpoints --step 300
    python scripts/verify_checkpoint.py runs/old/checkpoints --write_missing  # adopt old steps

DIR is a checkpoint directory (``<step>/`` subdirectories) or one step directory. Each step's
files are hashed and compared with ``<step>/checksums.json`` (written when the step was saved);
a file the manifest does not list, a table emptied or cut short, and a tokenizer file the step's
config reads but the manifest does not list are errors too (the two files orbax writes when it
commits a step are checked by name). A step saved before checksums existed is reported as
unverified (``--write_missing`` writes its checksums, vouching for the bytes as they are now).
The manifest also covers the tokenizer and T5 config in ``language_assets/`` beside the steps.
Prints one line per step, then one JSON line; exits 1 if any step is corrupt, incomplete or
unverified (nothing vouches for its bytes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="checkpoint directory or one step directory")
    parser.add_argument("--step", type=int, default=None, help="only this step")
    parser.add_argument(
        "--write_missing", action="store_true", help="write checksums for steps that have none"
    )
    return parser.parse_args(argv)


def step_directories(directory: str, step: int | None) -> dict[int | str, str]:
    """{step: path} of the steps to check (a step directory checks itself)."""
    from octo_like import storage
    from octo_like.model.checkpoint_layout import FINALIZED_MARKER

    directory = storage.absolute(directory)
    names = storage.listdir(directory)
    if FINALIZED_MARKER in names or "checksums.json" in names:  # one step directory
        return {storage.basename(directory): directory}
    steps = sorted(int(n) for n in names if n.isdigit())
    if step is not None:
        if step not in steps:
            raise SystemExit(f"no step {step} in {directory} (steps: {steps})")
        steps = [step]
    if not steps:
        raise SystemExit(f"{directory} holds no checkpoint steps")
    return {s: storage.join(directory, str(s)) for s in steps}


def check_step(path: str, write_missing: bool) -> dict:
    """{"status": ok | unverified | adopted | incomplete | corrupt, ...} for one step."""
    from octo_like import storage
    from octo_like.model import checkpoint_integrity as integrity
    from octo_like.model.checkpoint_layout import FINALIZED_MARKER

    if not storage.exists(storage.join(path, FINALIZED_MARKER)):
        return {"status": "incomplete", "error": f"{path}: no {FINALIZED_MARKER} (unfinished save)"}
    start = time.perf_counter()
    try:
        verified = integrity.verify_checksums(path, warn_unverified=False)
    except integrity.CheckpointCorruptError as error:
        return {"status": "corrupt", "error": str(error)}
    if not verified:
        if not write_missing:
            return {
                "status": "unverified",
                "error": f"{path}: no checksums.json, nothing vouches for its bytes "
                "(--write_missing adopts it as it is now)",
            }
        try:
            integrity.write_checksums(path)
        except integrity.CheckpointCorruptError as error:
            return {"status": "corrupt", "error": str(error)}
        except PermissionError as error:
            return {
                "status": "unverified",
                "error": f"{path}: read-only ({error.strerror}: {error.filename}), so "
                "--write_missing cannot write its checksums; run it where the directory is "
                "writable (its owner, or a copy)",
            }
        except OSError as error:
            return {
                "status": "unverified",
                "error": f"{path}: cannot write checksums.json ({error.strerror or error}: "
                f"{error.filename})",
            }
        return {"status": "adopted"}
    files = integrity.read_manifest(path) or {}
    return {
        "status": "ok",
        "files": len(files),
        "megabytes": round(sum(e["size"] for e in files.values()) / 2**20, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {}
    for step, path in step_directories(args.directory, args.step).items():
        result = check_step(path, args.write_missing)
        results[str(step)] = result
        detail = result.get("error") or (
            f"{result['files']} files, {result['megabytes']} MB in {result['seconds']} s"
            if result["status"] == "ok"
            else "checksums written"
        )
        print(f"step {step}: {result['status']}: {detail}")
    bad = sorted(
        s for s, r in results.items() if r["status"] in ("corrupt", "incomplete", "unverified")
    )
    print(json.dumps({"directory": args.directory, "steps": results, "bad_steps": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""One case of the failure drill, or its shared fixtures, in this process: what the runner
starts as ``python -m tests.drill.child`` (a fresh interpreter per case, so a case that hangs,
crashes or leaks state costs only itself). Prints one tagged JSON line the runner reads."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import traceback

from tests.drill import CASES
from tests.drill.common import OUTCOMES, RESULT_TAG, Context, one_line


def run_one(case_id: str, workdir: pathlib.Path) -> int:
    """Runs one case and prints its classified result; an unexpected traceback is a crash."""
    case = CASES[case_id]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{case_id}-", dir=workdir / "cases"))
    try:
        outcome, evidence = case.run(Context(workdir, tmp))
    except Exception as error:  # noqa: BLE001 - an unexpected traceback is the finding
        traceback.print_exc()
        outcome, evidence = "crash", one_line(f"{type(error).__name__}: {error}")
    assert outcome in OUTCOMES, f"case {case_id} returned the unknown outcome {outcome!r}"
    print(RESULT_TAG + json.dumps({"outcome": outcome, "evidence": evidence}), flush=True)
    return 0


def set_up(workdir: pathlib.Path) -> int:
    """The shared fixtures: a tiny random checkpoint at step 3 with its T5 tokenizer."""
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from tests.inference.conftest import host_initialized_model, tiny_config

    language = write_tiny_t5_checkpoint(str(workdir / "t5"))
    host_initialized_model(tiny_config(language)).save_pretrained(3, str(workdir / "checkpoints"))
    (workdir / "setup.done").write_text("ok")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the drill's fixtures and scratch")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run-case", help="the id of the case to run")
    what.add_argument("--setup", action="store_true", help="build the shared fixtures")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    return set_up(workdir) if args.setup else run_one(args.run_case, workdir)


if __name__ == "__main__":
    sys.exit(main())

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

The cases and the runner are test code (tests/drill/, which the test suite imports too): the
drill runs from a checkout of the repository, like the tests.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tests.drill import runner  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="cases whose id or category contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per case")
    parser.add_argument("--workdir", default=None, help="fixtures and scratch (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = runner.selected(args.only)
    if args.list:
        runner.list_cases(cases)
    else:
        runner.run_and_report(cases, args.workdir, args.timeout, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

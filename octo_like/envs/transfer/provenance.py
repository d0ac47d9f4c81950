"""Where a benchmark result was made: the code's commit and the machine's CPU model.

A transfer report compares arms trained hours or days apart; arms trained at different commits,
or timed on different CPUs, differ by more than what they start from (issue 42 found one report
spanning three commits and two CPU types). Every arm records this at training and at evaluation,
and `paired.check_provenance` refuses a report that mixes them unless told to say so.
"""

from __future__ import annotations

import os
import subprocess

from octo_like.training.parallel.runtime import cpu_model

UNKNOWN = "unknown"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_commit(path: str = _PACKAGE_ROOT) -> str:
    """The checkout's commit (12 hex digits) holding `path`, ``+dirty`` when tracked files
    differ from it (the code that ran is then not the commit's); `UNKNOWN` outside a git
    checkout (an installed package) or without git."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", path, *argv], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return head + ("+dirty" if dirty else "")


def current(path: str = _PACKAGE_ROOT) -> dict[str, str]:
    """``{"commit": ..., "cpu": ...}`` of this process, as results record it."""
    return {"commit": code_commit(path), "cpu": cpu_model() or UNKNOWN}

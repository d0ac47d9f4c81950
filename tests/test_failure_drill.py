"""The failure drill (tests/drill, behind scripts/failure_drill.py) runs its cases through its
own runner and classifies them: a few of the fastest (wrong configs) so the drill cannot rot
unnoticed."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tests.drill import CASES, runner


def test_config_cases_are_run_in_subprocesses_and_classified(tmp_path):
    cases = [CASES[c] for c in ("config-head-difusion", "config-transformer-tinyy")]
    rows = {row["id"]: row for row in runner.drill(cases, tmp_path, timeout=300)}
    assert rows["config-head-difusion"]["outcome"] == "named"
    assert "difusion" in rows["config-head-difusion"]["evidence"]
    assert rows["config-transformer-tinyy"]["outcome"] == "named"


def test_a_hang_is_killed_and_classified_as_a_crash(tmp_path):
    (tmp_path / "setup.done").write_text("ok")  # no fixtures needed
    rows = runner.drill([CASES["config-head-difusion"]], tmp_path, timeout=0.5)
    assert rows[0]["outcome"] == "crash" and "SIGKILL" in rows[0]["evidence"]


def test_the_catalogue_covers_every_category():
    categories = {c.category for c in CASES.values()}
    assert categories >= {"data", "checkpoint", "kill", "config", "server"}
    assert categories >= {"lease", "client", "entries", "inputs"}  # issue 40
    assert "octo-surfaces" in categories  # issue 69
    assert 56 <= len(CASES) <= 120  # 56 at the drill's landing; issue 40 adds more
    assert runner.selected("config") and all("config" in c.id for c in runner.selected("config"))


def test_the_script_lists_the_catalogue_from_a_checkout():
    """scripts/failure_drill.py is a thin command line over tests/drill: run as a user does
    (no PYTHONPATH, from another directory), it finds the package and lists every case."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/failure_drill.py"), "--list"],
        cwd="/", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    listed = [line.split()[0] for line in out.stdout.splitlines()]
    assert listed == list(CASES)

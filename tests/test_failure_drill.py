"""scripts/failure_drill.py runs its cases through its own runner and classifies them: a few of
the fastest (wrong configs) so the drill cannot rot unnoticed."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def load_drill():
    spec = importlib.util.spec_from_file_location(
        "failure_drill", REPO / "scripts/failure_drill.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_cases_are_run_in_subprocesses_and_classified(tmp_path):
    drill = load_drill()
    cases = [drill.CASES[c] for c in ("config-head-difusion", "config-transformer-tinyy")]
    rows = {row["id"]: row for row in drill.drill(cases, tmp_path, timeout=300)}
    assert rows["config-head-difusion"]["outcome"] == "named"
    assert "difusion" in rows["config-head-difusion"]["evidence"]
    assert rows["config-transformer-tinyy"]["outcome"] == "named"


def test_a_hang_is_killed_and_classified_as_a_crash(tmp_path, monkeypatch):
    drill = load_drill()
    (tmp_path / "setup.done").write_text("ok")  # no fixtures needed
    rows = drill.drill([drill.CASES["config-head-difusion"]], tmp_path, timeout=0.5)
    assert rows[0]["outcome"] == "crash" and "SIGKILL" in rows[0]["evidence"]


def test_the_catalogue_covers_every_category():
    drill = load_drill()
    categories = {c.category for c in drill.CASES.values()}
    assert categories >= {"data", "checkpoint", "kill", "config", "server"}
    assert categories >= {"lease", "client", "entries", "inputs"}  # issue 40
    assert 56 <= len(drill.CASES) <= 120  # 56 at the drill's landing; issue 40 adds more
    assert drill.selected("config") and all("config" in c.id for c in drill.selected("config"))

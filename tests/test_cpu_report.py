"""The suite's CPU-time report (tests/cpu_report.py) counts what a test burns, in its own
process and in the processes it waits for, and ranks tests by it, with and without workers."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

BURNING_TESTS = """
import subprocess, sys, time

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def test_idle():
    time.sleep(0.3)

def test_burns_itself():
    burn(0.6)

def test_burns_in_a_child():
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.6\\n"
                    "while time.process_time() < end: pass"], check=True)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_tests_are_ranked_by_the_cpu_they_and_their_children_use(tmp_path, workers):
    (tmp_path / "test_burning.py").write_text(BURNING_TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.cpu_report",
               "-p", "no:cacheprovider", *workers, str(tmp_path / "test_burning.py")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stdout[-2000:]
    report = done.stdout.split("tests by CPU time", 1)[1]
    rows = re.findall(r"^\s*([\d.]+) CPU-s\s+\S+::(\w+)$", report, re.MULTILINE)
    seconds = {name: float(value) for value, name in rows}
    assert list(seconds)[2] == "test_idle"  # ranked: the two burners first, in either order
    assert seconds["test_burns_itself"] >= 0.55
    assert seconds["test_burns_in_a_child"] >= 0.55
    assert seconds["test_idle"] < 0.25  # sleeping is not CPU

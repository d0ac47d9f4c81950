"""The accelerator installs resolve: `pip install -e ".[tpu]"` / `".[cuda12]"` against the lock
file pick the pinned jax with its matching runtime (a dry run: nothing is installed)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(name: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if _canonical(line.split("==")[0].strip()) == name:
            return line.split("==")[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.lock")


@pytest.mark.slow
@pytest.mark.parametrize("extra, runtime", [("tpu", "libtpu"), ("cuda12", "jax-cuda12-plugin")])
def test_accelerator_extra_resolves_against_the_lock(extra, runtime):
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
            "--report", "-", "-c", "requirements.lock", f".[{extra}]",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    versions = {
        _canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in report["install"]
    }
    assert versions["jax"] == versions["jaxlib"] == _pinned("jax")
    assert runtime in versions, sorted(versions)
    if extra == "cuda12":
        assert versions[runtime] == _pinned("jax")  # the plugin matches jax exactly
    for name in ("flax", "optax", "tensorflow-cpu"):
        assert versions[name] == _pinned(name)


@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_every_pin_has_a_build_for_the_supported_pythons(python, tmp_path):
    """setup.py's python_requires (>=3.11,<3.14) holds: every pinned package of the lock has a
    wheel for that Python (pure-Python sdists, which build anywhere, are left out)."""
    sdist_only = {"promise"}
    lock = [
        line
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#") and _canonical(line.split("==")[0]) not in sdist_only
    ]
    (tmp_path / "lock.txt").write_text("\n".join(lock))
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
            "--ignore-installed", "--only-binary=:all:", "--python-version", python,
            "--target", str(tmp_path / "target"), "-r", str(tmp_path / "lock.txt"),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

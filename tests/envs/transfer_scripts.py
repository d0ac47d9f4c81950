"""The transfer benchmark's two entry scripts, loaded by path (scripts/ is no package), so the
tests run the package's benchmark (`octo_like.envs.transfer.transfer_benchmark`) with the entry
points the script itself hands it: a wrong wiring in the script fails them too."""

from __future__ import annotations

import importlib.util
import pathlib

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """scripts/<name>.py as a fresh module (its header puts train.py and finetune.py on the
    path: the `train` and `finetune` it hands over are a test's ``import train``)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry_points():
    """The `EntryPoints` scripts/benchmark_transfer.py runs the benchmark with."""
    return load_script("benchmark_transfer").entry_points()

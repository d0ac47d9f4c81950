"""Programs that run once per start (a model's initializers, a train state's first optimizer
state), compiled for their one run.

XLA compiles them as it compiles a train step, whose kernels run thousands of times: on a CPU,
LLVM's optimization past level 1 then costs compile time that one run never repays. `base` on
a 2-core CPU (alone): the initializers compile in 3.9 s instead of 7.2 and run in 0.9 s instead
of 0.8; the values differ by rounding only (tests/model/test_one_shot.py). Each start on every
host pays these compiles (or reads them from the compilation cache, whose key includes the
options).
"""

from __future__ import annotations

import os
from typing import Any

import jax

ONE_SHOT_LEVEL = 1  # XLA's backend (LLVM) optimization level for a program run once


def run_once(jitted: Any, *args: Any) -> Any:
    """``jitted(*args)`` (a `jax.jit` function), compiled with `one_shot_options`."""
    return jitted.lower(*args).compile(one_shot_options())(*args)


def one_shot_options() -> dict[str, int] | None:
    """XLA compile options for a program run once: on a CPU, LLVM optimization level 1. A level
    the process set itself (``XLA_FLAGS``: the tests' level 0, tests/xla_flags.py) stands, and
    accelerators keep their defaults (not measured there)."""
    if jax.default_backend() != "cpu":
        return None
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return {"xla_backend_optimization_level": ONE_SHOT_LEVEL}

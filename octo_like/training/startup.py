"""Where a run's time to its first step goes, by phase, said in one line at that step.

On a preemptible slice every restart pays the start-up on every host before training resumes:
building the input pipeline, computing or reading statistics, the first batch, initializing
the model, restoring the checkpoint, compiling the step. Without a breakdown a slow start has
no culprit (issue 41); `StartupClock` charges the wall time between marks to the phase named
at each mark, so the phases add up to the total.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The order the phases are reported in (a run marks those it has; "other" is the rest).
# "model init" includes reading a fine-tuning run's pretrained weights and building the train
# state; "step compile" is the first step, compiled (or read from the compilation cache) and run.
PHASES = (
    "setup",
    "statistics",
    "pipeline build",
    "first batch",
    "model init",
    "checkpoint restore",
    "step compile",
    "other",
)


class StartupClock:
    """`mark(phase)` charges the time since the previous mark (or since construction) to
    `phase`; `line()` is the report. `clock`: seconds, monotonic (injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._start = self._last = clock()
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = self._clock()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (now - self._last)
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._start

    def line(self) -> str:
        """e.g. ``time to first step 83.2 s: setup 1.0 s, statistics 12.1 s, ...``."""
        order = [p for p in PHASES if p in self.seconds]
        order += sorted(p for p in self.seconds if p not in PHASES)
        parts = ", ".join(f"{phase} {self.seconds[phase]:.1f} s" for phase in order)
        return f"time to first step {self.total:.1f} s: {parts}"

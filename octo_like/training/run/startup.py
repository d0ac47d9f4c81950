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
# state; "step compile" is the wait for the step's executable (compiled, or read from the
# compilation cache). The first step's own run is training, not start-up: on a CPU it is the
# model's FLOPs (~30 s for `base` at batch 8 on 2 cores), on an accelerator well under a second;
# the line gives it after the total. A phase run in another thread while the run went on (the
# pipeline build during model init, the step's compile from the model's shapes) is charged only
# with the wait it caused, and its own duration is said "alongside".
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
        self.alongside: dict[str, float] = {}  # phases run in another thread, their own time
        self.first_step_s: float | None = None

    def note_alongside(self, phase: str, seconds: float) -> None:
        """`phase` took `seconds` in another thread, overlapping the marked phases."""
        self.alongside[phase] = self.alongside.get(phase, 0.0) + seconds

    def first_step_ran(self) -> None:
        """The first step, dispatched at the last mark, has finished: its run, not a phase."""
        self.first_step_s = self._clock() - self._last

    def mark(self, phase: str) -> None:
        now = self._clock()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (now - self._last)
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._start

    def line(self) -> str:
        """e.g. ``time to first step 43.2 s: setup 1.0 s, statistics 12.1 s, ... [alongside:
        pipeline build 16.0 s]; the first step ran 28.1 s``."""
        text = f"time to first step {self.total:.1f} s: {_phases(self.seconds)}"
        if self.alongside:
            text += f" [alongside: {_phases(self.alongside)}]"
        if self.first_step_s is not None:
            text += f"; the first step ran {self.first_step_s:.1f} s"
        return text


def _phases(seconds: dict[str, float]) -> str:
    order = [p for p in PHASES if p in seconds]
    order += sorted(p for p in seconds if p not in PHASES)
    return ", ".join(f"{phase} {seconds[phase]:.1f} s" for phase in order)

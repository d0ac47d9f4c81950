"""Stopping cleanly on a preemption notice: every host saves the same step and exits 0.

Cloud schedulers (TPU VMs, GKE, SLURM with ``--signal``) announce a preemption with SIGTERM.
With `jax.distributed` initialized, JAX's coordination service takes that signal and turns it
into a *preemption sync point*: a step every process agrees on (one host may get the signal
before the others), reported by `multihost_utils.reached_preemption_sync_point`. A single
process has no coordination service, so this watch installs its own SIGTERM handler for the
duration of the run and restores the previous one afterwards.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class PreemptionWatch:
    """``with PreemptionWatch(start_step) as watch: ... if watch.reached(step): save, stop``.

    Call `reached(step)` on every process after every step, with increasing steps. Entering
    reports `start_step` to the sync point: the step every host agrees on is one past the
    latest step any host reported, and a resumed run's first step is `start_step + 1`.
    """

    def __init__(self, start_step: int = 0):
        self._start_step = start_step
        self._coordinated = jax.process_count() > 1 or jax.distributed.is_initialized()
        self._signalled = threading.Event()
        self._previous_handler = None
        self._installed = False

    def __enter__(self) -> PreemptionWatch:
        if self._coordinated:
            self.reached(self._start_step)  # an earlier step than any this run will report
        elif threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        log.warning("SIGTERM received: saving a checkpoint after the current step, then exiting")
        self._signalled.set()

    def reached(self, step: int) -> bool:
        """True at the step to save and stop at (the same on every process)."""
        if not self._coordinated:
            return self._signalled.is_set()
        try:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
            return False

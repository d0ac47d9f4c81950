"""The single-process preemption watch: SIGTERM during a run is turned into a stop request,
and the previous handler comes back afterwards. (Two processes: test_dress_rehearsal.py.)"""

from __future__ import annotations

import os
import signal

from octo_like.training.run.preemption import PreemptionWatch


def test_sigterm_requests_a_stop_and_the_old_handler_returns():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda *a: calls.append(a))
    try:
        with PreemptionWatch() as watch:
            assert not watch.reached(1)
            os.kill(os.getpid(), signal.SIGTERM)  # handled, the process lives on
            assert watch.reached(2) and watch.reached(3)
        assert calls == []  # the watch took the signal, not the old handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert len(calls) == 1  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)

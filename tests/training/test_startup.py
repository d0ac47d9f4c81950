"""The time-to-first-step line: phases charged between marks add up to the total, in the order
a run meets them, repeated marks accumulate."""

from __future__ import annotations

from octo_like.training.startup import StartupClock


def test_phases_add_up_to_the_total_in_run_order():
    ticks = iter([10.0, 11.0, 13.5, 14.0, 20.0, 20.25])
    clock = StartupClock(clock=lambda: next(ticks))
    clock.mark("step compile")  # marked first, reported in the run's order
    clock.mark("setup")
    clock.mark("setup")  # accumulates
    clock.mark("unnamed phase")
    clock.mark("first batch")
    assert clock.seconds == {
        "step compile": 1.0, "setup": 3.0, "unnamed phase": 6.0, "first batch": 0.25
    }  # fmt: skip
    assert clock.total == 10.25
    assert clock.line() == (
        "time to first step 10.2 s: setup 3.0 s, first batch 0.2 s, step compile 1.0 s, "
        "unnamed phase 6.0 s"
    )

"""The time-to-first-step line: phases charged between marks add up to the total, in the order
a run meets them, repeated marks accumulate."""

from __future__ import annotations

from octo_like.training.run.startup import StartupClock


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


def test_work_alongside_and_the_first_steps_run_are_said_outside_the_total():
    ticks = iter([0.0, 5.0, 9.0, 40.0])
    clock = StartupClock(clock=lambda: next(ticks))
    clock.mark("statistics")
    clock.note_alongside("pipeline build", 7.5)  # ran in a thread during model init
    clock.mark("model init")
    clock.first_step_ran()  # dispatched at the last mark (9.0), done at 40.0
    assert clock.total == 9.0 and clock.first_step_s == 31.0
    assert clock.line() == (
        "time to first step 9.0 s: statistics 5.0 s, model init 4.0 s "
        "[alongside: pipeline build 7.5 s]; the first step ran 31.0 s"
    )

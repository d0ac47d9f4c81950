"""Drill cases (issue 40): the URL-workdir lease: atomic acquisition under store latency, holder-
checked renewal, takeover after preemption. The store is tests/slow_store.py's ``slow://``:
a local directory behind 50 ms a request, with conditional writes as atomic as GCS's."""

from __future__ import annotations

from tests.drill.common import case, expect_error, one_line

LATENCY_S, STAGGER_S, TRIALS = 0.05, 0.01, 10


@case("lease-race-two-runs", "lease", good="none-needed")
def race(ctx):
    """Two runs started 10 ms apart on one workdir, 50 ms a store request, ten times: exactly
    one may take the lease each time (the other is refused by name)."""
    from tests import slow_store

    outcomes = slow_store.race(
        str(ctx.tmp), trials=TRIALS, contenders=2, latency_s=LATENCY_S, stagger_s=STAGGER_S
    )
    winners = [results.count("won") for results in outcomes]
    evidence = (f"{TRIALS} trials, 2 runs {STAGGER_S * 1000:.0f} ms apart, "
                f"{LATENCY_S * 1000:.0f} ms a request: winners {winners}")  # fmt: skip
    if any(n != 1 for n in winners):
        return "silent", one_line(f"{evidence}; {outcomes}")
    refusal = next(r for results in outcomes for r in results if r != "won")
    return "none-needed", one_line(f"{evidence}; loser: {refusal}")


@case("lease-restart-after-preemption", "lease", good="none-needed")
def restart(ctx):
    """A preempted run's lease, renewed a moment ago: the same job restarted (same run
    identity) takes it over at once instead of waiting out the expiry."""
    from octo_like.training.checkpoints.workdir_lock import WorkdirInUseError, WorkdirLock
    from tests import slow_store
    from tests.training.leases import read_lease, write_lease

    slow_store.register(LATENCY_S)
    workdir = f"{slow_store.SCHEME}{ctx.tmp}/run"
    write_lease(workdir, run_id="job-7")
    try:
        with WorkdirLock(workdir, run_id="job-7"):
            holder = read_lease(workdir)
    except WorkdirInUseError as error:
        return "named", one_line(f"restart refused: {error}")
    if holder.get("run_id") != "job-7" or holder.get("pid") == 4242:
        return "silent", one_line(f"the lease still names the dead run: {holder}")
    return "none-needed", f"taken over at once from pid 4242 by pid {holder['pid']}"


@case("lease-renewal-by-non-holder", "lease")
def renewal(ctx):
    """A run whose lease another run took (it came back after being given up for dead) must
    not renew it over the new holder: its renewal is refused naming the new holder."""
    from octo_like.training.checkpoints.workdir_lock import WorkdirLock
    from tests import slow_store
    from tests.training.leases import write_lease

    slow_store.register(LATENCY_S)
    workdir = f"{slow_store.SCHEME}{ctx.tmp}/run"
    lock = WorkdirLock(workdir, run_id="job-7", renew_s=3600).__enter__()
    lock.renew()  # the holder may
    write_lease(workdir, run_id="job-9")
    try:
        return expect_error(lock.renew, r"pid 4242.*took its lease", silent_if="renewed over it")
    finally:
        lock.release()

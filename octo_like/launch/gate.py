"""The compile check as a launch's gate: before anything is written, submitted or started, the
run's exact train step is compiled for the slice's topology (`scripts/compile_check.py`, XLA's
TPU compiler on libtpu's compile-only devices, on this machine), and a step that does not fit
the chips' HBM is refused with what would make it fit. Booking a slice, copying the image and
waiting for the first compile on every host is minutes to hours; this is one or two.

The check runs as its own process: libtpu's compiler keeps memory between compiles, the check
sets process-wide JAX settings (CPU backend, libtpu's environment) that the launcher must not
inherit, and its exit status and last JSON line are its contract (0 fits, 3 does not, 2 a bad
config or topology).
"""

from __future__ import annotations

import json
import subprocess
import sys

FITS, DOES_NOT_FIT, REFUSED = 0, 3, 2  # scripts/compile_check.py's exit statuses
SKIP_FLAG = "--skip_compile_check"
GIB = 1 << 30


def skipped(slice_name: str) -> None:
    """Says, where the report would have been, that nothing was checked."""
    print(
        f"compile check skipped ({SKIP_FLAG}): the train step was not compiled for "
        f"{slice_name}; a step that does not fit its HBM fails on every host after start-up",
        flush=True,
    )


def check_step_fits(
    check_command: list[str], topology: str, train_args: list[str], *, slice_name: str
) -> dict:
    """Runs `check_command` (the compile check script) for `topology` on train.py's flags and
    returns its report when the step fits; raises SystemExit, with the check's advice, when it
    does not fit, and with the check's own error when it could not compile."""
    command = [*check_command, "--topology", topology, "--", *train_args]
    print(
        f"compile check: compiling the train step for {slice_name} ({topology}) before "
        f"launching (a minute or two; {SKIP_FLAG} skips it)",
        flush=True,
    )
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stderr)  # its warnings and errors, as it wrote them
    report_lines = [line for line in done.stdout.splitlines() if not line.startswith("{")]
    if report_lines:
        print("\n".join(report_lines), flush=True)
    results = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode not in (FITS, DOES_NOT_FIT) or not results:
        said = [line for line in done.stderr.splitlines() if line.strip()][-12:]
        kind = "refused the config or topology" if done.returncode == REFUSED else "failed"
        raise SystemExit(
            f"refusing to launch: the compile check {kind} (exit status {done.returncode} of "
            f"{' '.join(command[:4])} ...):\n" + "\n".join(said) + f"\nFix it, or {SKIP_FLAG} "
            "to launch without the check"
        )
    report = json.loads(results[-1])
    if report["fits"] is False:
        raise SystemExit(refusal(report, slice_name))
    if report["fits"] is None:
        print(f"compile check: compiled, but the HBM of {report['device_kind']} is unknown")
    else:
        print(f"compile check: the step fits {slice_name}; launching", flush=True)
    return report


def refusal(report: dict, slice_name: str) -> str:
    """One message: what does not fit where, and the check's advice, largest saving first."""
    total, hbm = report["memory"]["total"] / GIB, report["hbm_bytes"] / GIB
    advice = report["suggestions"] or [
        "nothing the check knows (fsdp, remat, batch) would: use a larger slice"
    ]
    return (
        f"refusing to launch: the train step does not fit {slice_name} ({report['topology']}, "
        f"{report['chips']} x {report['device_kind']}): {total:.2f} GiB per chip of "
        f"{hbm:.2f} GiB HBM. To make it fit, try:\n"
        + "\n".join(f"  {line}" for line in advice)
        + f"\n(or {SKIP_FLAG} to launch anyway)"
    )

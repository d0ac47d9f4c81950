"""The XLA flags of every test process, in-process and the processes tests start.

Tests compile with XLA's backend optimization level 0 (LLVM code generation without its
optimization passes). On the 2-core CI machine compiling, not running, is most of a test's time:
the tests of tests/model compile in about half the time (124 s -> 70 s), while their programs
run on a few small batches, where slower code costs little. The values differ from the
optimized build's by rounding only (one float32 ulp in the initializers), and every comparison
in the suite runs both of its sides in processes that share these flags. Training runs,
benchmarks and users' processes keep XLA's defaults: nothing outside tests/ reads this.
"""

from __future__ import annotations

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int | None = None, inherited: str = "") -> str:
    """`inherited` plus the tests' flags; `devices` fakes that many CPU devices."""
    flags = [inherited.strip(), FAST_COMPILE]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flag for flag in flags if flag)

"""The suite's heaviest tests by CPU time, printed after `--durations`' slowest by wall time.

On the 2-core CI machine `make test`'s workers keep both cores busy, so a test's wall time
says as much about its neighbours as about itself; its CPU seconds (its worker's threads and
the processes it started and waited for: setup, call and teardown) are what the suite's wall
time is made of. Each test's figure travels to the controlling process in its teardown
report's ``user_properties`` (and so into `--junitxml`), which works under pytest-xdist.
Threads a test leaves running are counted to the tests after it.
"""

from __future__ import annotations

import resource

import pytest

PROPERTY = "cpu_s"
SHOWN = 25


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._cpu_report_start = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    start = getattr(item, "_cpu_report_start", None)
    if start is not None:
        item.user_properties.append((PROPERTY, round(_cpu_seconds() - start, 2)))


def pytest_configure(config):
    config.pluginmanager.register(CpuReport(), "cpu_report")


class CpuReport:
    """Collects the teardown reports' figures (on the controller under xdist) and prints them."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "teardown":
            for name, value in report.user_properties:
                if name == PROPERTY:
                    self.seconds[report.nodeid] = value

    def pytest_terminal_summary(self, terminalreporter):
        if not self.seconds:
            return
        total = sum(self.seconds.values())
        terminalreporter.write_sep("=", f"heaviest {SHOWN} tests by CPU time ({total:.0f} CPU-s)")
        ranked = sorted(self.seconds.items(), key=lambda item: -item[1])
        for nodeid, value in ranked[:SHOWN]:
            terminalreporter.write_line(f"{value:8.1f} CPU-s  {nodeid}")

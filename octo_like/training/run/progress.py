"""The console progress of a training run: a tqdm bar on a terminal, plain lines in a log file.

Shows steps/s and ETA, samples/s, the share of time spent waiting on the input pipeline and the
loss, so a run's speed and its bottleneck are visible while it trains. Kept apart from the metric
writers (`metrics.py`), which record values for later; this only reports them as they come.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import numpy as np


def _format(value: float, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


class Progress:
    """tqdm bar: steps/s and ETA (tqdm's, wall clock), samples/s, data-wait share, loss.

    `update` takes amounts since the previous call: `samples`, `data_wait_s` (seconds blocked
    on the input pipeline) and `step_s` (seconds in the train step). Shown, smoothed like
    tqdm's rate: samples per wall-clock second and ``data_wait_s / (data_wait_s + step_s)``;
    a share near 100% means the input pipeline is the bottleneck. Negative or non-finite
    amounts count as zero.
    """

    SMOOTHING = 0.1  # weight of the newest call in the exponential moving averages

    def __init__(
        self,
        total_steps: int,
        *,
        initial_step: int = 0,
        disable: bool = False,
        file: TextIO | None = None,
        mininterval: float = 1.0,
        plain: bool | None = None,
    ):
        from tqdm import tqdm

        stream = file if file is not None else sys.stderr
        # A log file (a cluster's job output) gets plain lines from `log`, not a bar drawn
        # with carriage returns; None: plain when the stream is not a terminal.
        if plain is None:
            plain = not (hasattr(stream, "isatty") and stream.isatty())
        self._plain, self._quiet, self._stream = plain, disable, stream
        self._bar = tqdm(
            total=max(int(total_steps), 0),
            initial=max(int(initial_step), 0),
            unit="step",
            dynamic_ncols=True,
            disable=disable or plain,
            file=stream,
            mininterval=mininterval,
            smoothing=self.SMOOTHING,
        )
        self._last_time = time.perf_counter()
        self._averages: dict[str, float] | None = None

    def update(
        self,
        step: int,
        samples: float = 0,
        data_wait_s: float = 0.0,
        step_s: float = 0.0,
        loss: float | None = None,
    ) -> None:
        now = time.perf_counter()
        wall, self._last_time = now - self._last_time, now
        wait = _non_negative(data_wait_s)
        latest = {
            "samples": _non_negative(samples),
            "wall": _non_negative(wall),
            "wait": wait,
            "busy": wait + _non_negative(step_s),
        }
        if self._averages is None:
            self._averages = latest
        else:
            a = self.SMOOTHING
            self._averages = {k: (1 - a) * self._averages[k] + a * v for k, v in latest.items()}
        avg = self._averages
        samples_per_s = avg["samples"] / avg["wall"] if avg["wall"] > 0 else float("nan")
        wait_share = avg["wait"] / avg["busy"] if avg["busy"] > 0 else float("nan")
        loss_value = float("nan") if loss is None else float(np.asarray(loss).reshape(-1)[0])
        self._bar.set_postfix_str(
            f"samples/s={_format(samples_per_s, '.1f')} "
            f"data_wait={_format(100 * wait_share, '.0f')}% loss={_format(loss_value, '.4g')}",
            refresh=False,
        )
        target = min(int(step), self._bar.total) if self._bar.total else int(step)
        self._bar.update(max(target - self._bar.n, 0))  # never backwards, never past the end

    def log(self, step: int, values: dict[str, float], *, rates: bool = True) -> None:
        """One plain line (when not drawing a bar): ``step N/T`` then `values` (e.g. loss,
        val_loss), then with `rates` samples/s, data-wait share and ETA from the smoothed
        step time."""
        if not self._plain or self._quiet:
            return
        total = self._bar.total
        parts = [f"step {int(step)}/{total}"]
        parts += [f"{name} {_format(float(value), '.4g')}" for name, value in values.items()]
        avg = self._averages
        if rates and avg is not None and avg["wall"] > 0:
            parts.append(f"samples/s {_format(avg['samples'] / avg['wall'], '.1f')}")
            if avg["busy"] > 0:
                parts.append(f"data_wait {_format(100 * avg['wait'] / avg['busy'], '.0f')}%")
            remaining = max(total - int(step), 0) * avg["wall"]
            parts.append(f"eta {_duration(remaining)}")
        print(" ".join(parts), file=self._stream, flush=True)

    def close(self) -> None:
        self._bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _non_negative(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) and value > 0 else 0.0

"""Finite in, finite out: numbers a robot sends and actions it receives are checked here.

One NaN or Inf in a proprio vector reaches every action of the chunk through attention, and a
finite but absurd value (1e30) does the same after normalization; a robot must never be sent
such actions. Errors name the field and the first bad index, so a client can find the sensor.
"""

from __future__ import annotations

import numpy as np

# A normalized input this many standard deviations (or bound widths) from the data is no
# robot state: a unit mix-up or a garbage reading.
MAX_NORMALIZED_MAGNITUDE = 1e3


class NonFiniteActions(RuntimeError):
    """The model produced NaN/Inf actions; they are never sent to a robot."""


def _first(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.argwhere(mask)[0]]


def check_finite(name: str, values) -> None:
    """Raises ValueError naming `name`, the count and the first index of a NaN or Inf."""
    array = np.asarray(values)
    if array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = _first(bad)
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s), the first "
            f"{array[tuple(index)]!r} at index {index}: send finite numbers (a missing reading "
            "is a pad mask, not a NaN)"
        )


def check_normalized_range(name: str, normalized, raw) -> None:
    """Raises ValueError when a normalized value is beyond `MAX_NORMALIZED_MAGNITUDE`."""
    normalized = np.asarray(normalized)
    beyond = np.abs(normalized) > MAX_NORMALIZED_MAGNITUDE
    if beyond.any():
        index = _first(beyond)
        raise ValueError(
            f"{name} value {float(np.asarray(raw)[tuple(index)]):.6g} at index {index} is "
            f"{float(normalized[tuple(index)]):.3g} in normalized units (limit "
            f"{MAX_NORMALIZED_MAGNITUDE:g}): not a state of the robot the statistics describe "
            "(wrong units or a bad sensor reading?)"
        )


def check_actions(actions) -> None:
    """Raises `NonFiniteActions` naming the windows and the first index of a NaN/Inf action."""
    array = np.asarray(actions)
    bad = ~np.isfinite(array)
    if bad.any():
        windows = sorted({int(i) for i in np.argwhere(bad)[:, 0]}) if array.ndim > 1 else [0]
        raise NonFiniteActions(
            f"the model produced {int(bad.sum())} non-finite action value(s) (windows "
            f"{windows}, first at index {_first(bad)}); refusing to send them. The inputs were "
            "finite: check the checkpoint's weights and statistics"
        )

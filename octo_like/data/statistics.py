"""Action and proprio statistics of a dataset: streamed in one pass, cached by content.

Input: standardized trajectories (schema stage 2), ``action float32[T, A]`` and
``observation.proprio float32[T, P]``, read before any padding so padded zeros never count.

One pass, bounded memory. Mean and std merge per-chunk moments in float64 (Chan et al.), so
large offsets do not cancel. Percentiles come from a histogram per dimension on a lattice of
power-of-two bin widths: when the data outgrow its `HISTOGRAM_BINS` bins, pairs of bins merge
(width doubles), so no second pass and no stored samples are needed. Each order statistic is
located in its bin and interpolated inside it, and `np.percentile`'s linear interpolation is
applied between two such estimates, so every percentile is within one bin width of
`np.percentile` on the concatenated data; the final bin width is below
``max(2 * (max - min) / (HISTOGRAM_BINS - 2), max(|min|, |max|) * 2**-49)`` per dimension.

Outliers: one finite but absurd value (a 3e38 written by a broken logger) moves the mean and
std so far that every normal value normalizes to the same number. A dimension is warned about
(dataset, key, dimension, how many values, the most extreme) when a value lies outside
``centre ± OUTLIER_FACTOR * spread``, with ``centre = (p01 + p99) / 2`` and
``spread = max(p99 - p01, 1)``: 20 central ranges, and at least 20 units (robot actions and
states are O(1) in their stored units, metres / radians / gripper 0..1, so a rare 0/1 flag in a
dimension that is 0 over its central 98% is not an outlier). No value of a sane dimension comes
near the bound, while the histogram percentiles stay precise enough for the rule whatever the
outlier (see `_Accumulator.outliers`).
The statistics are still computed and returned: fix or skip the data, they are not trimmed.
A value beyond ±`VALUE_LIMIT` (~1.8e19: its square overflows float32) is refused like a NaN,
naming dataset, episode, key, step and dimension: with few transitions it moves p01/p99 with it,
so the rule above cannot see it, and float32 arithmetic on it (a variance, a BOUNDS range, a
squared error) is inf. The finished statistics are checked too (`DatasetStatistics.check`).

Caching by content lives in `statistics_cache.py`.

The statistics containers (`ArrayStatistics`, `DatasetStatistics`) live in
`octo_like.normalization`, which inference and the model import without TensorFlow.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from octo_like.normalization import VALUE_LIMIT, ArrayStatistics, DatasetStatistics

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 4096
"""Bins per dimension of the percentile histogram (the error bound above scales as 1/bins)."""
STATISTICS_FORMAT = 1
"""Part of every fingerprint: bump it when the way statistics are computed changes."""
OUTLIER_FACTOR = 20.0
"""Values farther than this many central ranges (p99 - p01) from its centre are warned about."""
OUTLIER_MIN_SPREAD = 1.0
"""The central range used for the bound is at least this (in the data's own units)."""
_CHUNK_ROWS = 16_384  # transitions merged per numpy update; bounds memory, amortizes overhead
_PROGRESS_SECONDS = 10.0


class _Accumulator:
    """Streaming mean/std/min/max and percentile histogram of one key, float64[n, D] chunks."""

    def __init__(self, dim: int):
        self.dim, self.count = dim, 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.exponent = np.full(dim, -1000, np.int64)  # bin width = 2**exponent, only grows
        self.counts = np.zeros((dim, HISTOGRAM_BINS), np.int64)  # bin b: lattice cell start + b

    def _start(self) -> np.ndarray:
        return np.floor(self.min / np.ldexp(1.0, self.exponent)).astype(np.int64)

    def update(self, x: np.ndarray) -> None:
        n = x.shape[0]
        chunk_mean = x.mean(axis=0)
        chunk_m2 = np.square(x - chunk_mean).sum(axis=0)
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + np.square(delta) * (self.count * n / total)
        self.count = total

        first = self.count == n
        old_start = None if first else self._start()
        old_exponent = self.exponent.copy()
        self.min = np.minimum(self.min, x.min(axis=0))
        self.max = np.maximum(self.max, x.max(axis=0))
        # Smallest width 2**e with (max - min) / 2**e <= bins - 2, so the cells from min to max
        # fit in the bins; and |x| / 2**e < 2**50, so cell indices are exact integers.
        with np.errstate(divide="ignore"):
            by_range = np.ceil(np.log2((self.max - self.min) / (HISTOGRAM_BINS - 2)))
            by_magnitude = np.ceil(np.log2(np.maximum(-self.min, self.max))) - 50
        needed = np.nan_to_num(np.maximum(by_range, by_magnitude), neginf=-1000).astype(np.int64)
        self.exponent = np.maximum(self.exponent, np.clip(needed, -1000, 1000))
        start = self._start()
        moved = (
            [] if first else np.flatnonzero((start != old_start) | (self.exponent != old_exponent))
        )
        for d in moved:
            # Halving the width `shift` times maps cell c to floor(c / 2**shift); cells are below
            # 2**51 in magnitude, so a shift of 62 is as good as any larger one.
            shift = min(int(self.exponent[d] - old_exponent[d]), 62)
            cells = (old_start[d] + np.arange(HISTOGRAM_BINS)) >> shift
            merged = np.zeros(HISTOGRAM_BINS, np.int64)
            # Bins that hold counts always land inside; empty ones may fall outside: clip them.
            np.add.at(merged, np.clip(cells - start[d], 0, HISTOGRAM_BINS - 1), self.counts[d])
            self.counts[d] = merged
        cell = np.floor(x / np.ldexp(1.0, self.exponent)).astype(np.int64) - start
        flat = (cell + np.arange(self.dim) * HISTOGRAM_BINS).ravel()
        self.counts += np.bincount(flat, minlength=self.dim * HISTOGRAM_BINS).reshape(
            self.counts.shape
        )

    def _order_statistic(self, d: int, rank: int) -> float:
        """Estimate of the rank-th smallest value of dim d (0-based), inside its bin."""
        if rank == 0:
            return float(self.min[d])
        if rank == self.count - 1:
            return float(self.max[d])
        cumulative = np.cumsum(self.counts[d])
        b = int(np.searchsorted(cumulative, rank, side="right"))
        before = cumulative[b] - self.counts[d, b]
        width = math.ldexp(1.0, int(self.exponent[d]))
        low = (int(self._start()[d]) + b) * width
        value = low + width * (rank - before + 0.5) / self.counts[d, b]
        return float(np.clip(value, self.min[d], self.max[d]))

    def percentile(self, q: float) -> np.ndarray:
        """`np.percentile(x, q, axis=0)` (linear method) to within one bin width."""
        position = q / 100.0 * (self.count - 1)
        low = math.floor(position)
        high, frac = min(low + 1, self.count - 1), position - low
        out = np.empty(self.dim)
        for d in range(self.dim):
            a, b = self._order_statistic(d, low), self._order_statistic(d, high)
            out[d] = a + frac * (b - a)
        return out

    def outliers(self, stats: ArrayStatistics) -> list[tuple[int, int, float, float, float]]:
        """(dim, count, most extreme value, low, high) of every dim with values outside
        [low, high] = ``centre ± OUTLIER_FACTOR * spread`` (module docstring).

        The percentiles are within one bin width w of the exact ones, and an outlier at distance
        D from the bulk makes w <= D / (HISTOGRAM_BINS - 2), so the bound stays below D for
        any factor below ~HISTOGRAM_BINS / 2. The count is of the histogram bins wholly
        outside [low, high]: exact for far outliers, a lower bound near the bound."""
        found = []
        for d in range(self.dim):
            p01, p99 = float(stats.p01[d]), float(stats.p99[d])
            centre = (p01 + p99) / 2
            spread = max(p99 - p01, OUTLIER_MIN_SPREAD)
            low, high = centre - OUTLIER_FACTOR * spread, centre + OUTLIER_FACTOR * spread
            if self.min[d] >= low and self.max[d] <= high:
                continue
            width = math.ldexp(1.0, int(self.exponent[d]))
            edges = (int(self._start()[d]) + np.arange(HISTOGRAM_BINS + 1)) * width
            beyond = (edges[1:] <= low) | (edges[:-1] > high)
            count = max(int(self.counts[d][beyond].sum()), 1)
            extreme = self.max[d] if self.max[d] - high >= low - self.min[d] else self.min[d]
            found.append((d, count, float(extreme), low, high))
        return found

    def finish(self) -> ArrayStatistics:
        return ArrayStatistics(
            mean=self.mean,
            std=np.sqrt(self.m2 / self.count),
            min=self.min,
            max=self.max,
            p01=self.percentile(1.0),
            p99=self.percentile(99.0),
        )


def _lookup(traj: Mapping, path: tuple[str, ...], where: str):
    value = traj
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            have = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise KeyError(f"{where} has no key {'/'.join(path)!r} (found {have})")
        value = value[part]
    return value


def _describe(traj: Mapping, index: int, dataset: str = "") -> str:
    """``[dataset 'x': ]trajectory 3 (dataset_name=..., episode_index=...)`` for errors."""
    parts = []
    for key in ("dataset_name", "episode_index", "episode_id"):
        if key in traj:
            value = np.asarray(traj[key]).ravel()
            if value.size:
                item = value[0]
                text = item.decode(errors="replace") if isinstance(item, bytes) else item
                parts.append(f"{key}={text}")
    prefix = f"dataset {dataset!r}: " if dataset else ""
    return f"{prefix}trajectory {index}" + (f" ({', '.join(parts)})" if parts else "")


def _as_matrix(value, name: str, traj: Mapping, index: int, dataset: str = "") -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ValueError(
            f"{_describe(traj, index, dataset)}: {name!r} must be a numeric [T, D] array, "
            f"got {array.dtype}{list(array.shape)}"
        )
    array = array.astype(np.float64)  # float64: no moment of float32 data overflows
    bad = ~np.isfinite(array)
    if bad.any():
        step, dim = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{_describe(traj, index, dataset)}: {name!r} has {int(bad.sum())} non-finite values "
            f"(first at step {step}, dim {dim}: {array[step, dim]})"
        )
    huge = np.abs(array) > VALUE_LIMIT
    if huge.any():
        step, dim = (int(i) for i in np.argwhere(huge)[0])
        raise ValueError(
            f"{_describe(traj, index, dataset)}: {name!r} has {int(huge.sum())} value(s) beyond "
            f"+-{VALUE_LIMIT:.3g} (first at step {step}, dim {dim}: {array[step, dim]:.6g}): "
            "its square overflows float32 and it would make the mean, std and normalization of "
            "the dimension meaningless; fix or skip the episode (a logging error?)"
        )
    return array


def _path(key: str | Sequence[str]) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


def compute_statistics(
    trajectories: tf.data.Dataset | Iterable[Mapping],
    *,
    action_key: str | Sequence[str] = "action",
    proprio_key: str | Sequence[str] | None = ("observation", "proprio"),
    progress: bool = False,
    name: str = "",
) -> DatasetStatistics:
    """Statistics of actions and proprio over all transitions, in one streaming pass.

    `trajectories` is iterated exactly once, so a one-shot Python iterator works; a
    `tf.data.Dataset` is first reduced to the keys needed (images never reach Python).
    `proprio_key=None` skips proprio. Raises ValueError on zero transitions, non-finite or
    out-of-range values or dimensions that change between trajectories (naming dataset `name`,
    the key and trajectory). Logs a warning naming dataset, key and dimension for outliers
    (module docstring).
    """
    keys = {"action": _path(action_key)}
    if proprio_key is not None:
        keys["proprio"] = _path(proprio_key)
    names = {k: "/".join(p) for k, p in keys.items()}
    context = ("dataset_name", "episode_index", "episode_id")
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset implies TensorFlow is loaded
    if tf is not None and isinstance(trajectories, tf.data.Dataset):
        spec = trajectories.element_spec
        for path in keys.values():
            _lookup(spec, path, "the dataset")  # fail before reading anything
        wanted = [k for k in context if isinstance(spec, Mapping) and k in spec]

        def select(traj):
            out = {k: _lookup(traj, path, "the dataset") for k, path in keys.items()}
            return out | {k: tf.reshape(traj[k], [-1])[:1] for k in wanted}

        from octo_like.data.dataset import as_written  # here: this module imports no TF

        stream: Iterable[Mapping] = trajectories.map(as_written(select)).as_numpy_iterator()
        keys = {k: (k,) for k in keys}
    else:
        stream = trajectories

    accumulators: dict[str, _Accumulator] = {}
    pending: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    pending_rows = num_trajectories = num_transitions = 0
    started = last_report = time.monotonic()

    def flush():
        for k, arrays in pending.items():
            if arrays and k in accumulators:
                accumulators[k].update(np.concatenate(arrays))
            arrays.clear()

    for index, traj in enumerate(stream):
        rows = None
        for key, path in keys.items():
            value = _lookup(traj, path, f"trajectory {index}")
            array = _as_matrix(value, names[key], traj, index, name)
            if rows is not None and array.shape[0] != rows:
                raise ValueError(
                    f"{_describe(traj, index)}: {names[key]!r} has {array.shape[0]} steps "
                    f"but {names['action']!r} has {rows}"
                )
            rows = array.shape[0]
            if key not in accumulators:
                if key == "action" and array.shape[1] == 0:
                    raise ValueError(f"{_describe(traj, index)}: {names[key]!r} has 0 dims")
                accumulators[key] = _Accumulator(array.shape[1])
            elif array.shape[1] != accumulators[key].dim:
                raise ValueError(
                    f"{_describe(traj, index)}: {names[key]!r} has {array.shape[1]} dims, "
                    f"earlier trajectories had {accumulators[key].dim}"
                )
            if rows and array.shape[1]:
                pending[key].append(array)
        num_trajectories += 1
        num_transitions += rows
        pending_rows += rows
        if pending_rows >= _CHUNK_ROWS:
            flush()
            pending_rows = 0
        now = time.monotonic()
        if progress and now - last_report >= _PROGRESS_SECONDS:
            last_report = now
            logger.info(
                "statistics: %d trajectories, %d transitions (%.1f trajectories/s)",
                num_trajectories, num_transitions, num_trajectories / (now - started),
            )  # fmt: skip
    flush()
    label = f"dataset {name!r}" if name else "the input"
    if num_trajectories == 0:
        raise ValueError(f"compute_statistics: {label} has no trajectories")
    if num_transitions == 0:
        raise ValueError(
            f"compute_statistics: all {num_trajectories} trajectories of {label} are empty"
        )
    finished = {
        key: accumulator.finish()
        for key, accumulator in accumulators.items()
        if key == "action" or accumulator.dim > 0
    }
    for key, stats in finished.items():
        for dim, count, extreme, low, high in accumulators[key].outliers(stats):
            logger.warning(
                "statistics of %s: %r dim %d has %d value(s) outside [%.6g, %.6g] (centre of "
                "p01..p99 +- %g x max(their range, 1)), most extreme %.6g: they distort its "
                "mean/std and normalization; fix or skip the episodes holding them",
                name or "dataset", names[key], dim, count, low, high, OUTLIER_FACTOR, extreme,
            )  # fmt: skip
    statistics = DatasetStatistics(
        action=finished["action"],
        proprio=finished.get("proprio"),
        num_transitions=num_transitions,
        num_trajectories=num_trajectories,
    )
    statistics.check(name or "input")  # float32 results of float64 moments: finite, in range
    return statistics

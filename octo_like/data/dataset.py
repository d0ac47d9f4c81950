"""The trajectory-dataset layer on tf.data: trajectory maps, flattening to frames, frame maps.

A thin, explicit wrapper: every stage says how many threads it may use, randomness comes from
per-element stateless seeds (so parallel maps stay deterministic), and the host-RAM budget that
tf.data's autotuner may use for prefetch buffers is a knob rather than a surprise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

Map = Callable[[dict], dict]
SeededMap = Callable[[dict, tf.Tensor], dict]


# Trajectories whose frames `TrajectoryDataset.flatten` interleaves, one frame from each in
# turn: part of the frame order (what the shuffle buffer starts from), so fixed, never the
# thread count (issue 70: at the thread count, 1 and 2 threads gave other batches).
TRAJECTORIES_INTERLEAVED = 16


@dataclasses.dataclass(frozen=True)
class Parallelism:
    """Thread counts per stage and the autotuner's RAM budget (GiB; None = tf.data default).
    They set speed only: which elements come in which order is the same at any count
    (deterministic maps, interleave widths fixed: `TRAJECTORIES_INTERLEAVED`,
    `rlds.FILES_INTERLEAVED`).

    A count left None is scaled to the host (`host_threads`): a 2-core laptop keeps 2 per stage,
    a 96-core accelerator host reads with 24 threads and decodes/augments frames with 48.
    """

    read: int | None = None
    trajectory: int | None = None
    frame: int | None = None
    ram_budget_gb: float | None = 1.0
    cpu_count: int | None = None  # None: the CPUs this process may use (`usable_cpu_count`)

    def __post_init__(self):
        auto = host_threads(self.cpu_count or usable_cpu_count())
        for name in ("read", "trajectory", "frame"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, auto[name])
            if getattr(self, name) < 1 and getattr(self, name) != tf.data.AUTOTUNE:
                raise ValueError(f"Parallelism.{name} must be >= 1 or AUTOTUNE")

    def scaled(self, fraction: float) -> Parallelism:
        """This budget's share for one dataset of a mixture (at least one thread per stage)."""
        share = lambda n: max(1, round(n * fraction))
        return dataclasses.replace(
            self, read=share(self.read), trajectory=share(self.trajectory), frame=self.frame
        )


def usable_cpu_count(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its CPU affinity (what SLURM's ``--cpus-per-task`` and
    ``taskset`` set) capped by the cgroup's CPU quota (what a Kubernetes ``cpu`` limit sets),
    rounded up. ``os.cpu_count()`` counts the whole machine and would start a thread per core
    of a 200-core host in a 16-CPU container."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 2
    quota = _cgroup_cpu_quota(cgroup_root)
    return max(1, min(count, quota) if quota is not None else count)


def _cgroup_cpu_quota(root: str) -> int | None:
    """ceil(quota / period) of cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None if
    unlimited or unreadable."""
    try:
        with open(os.path.join(root, "cpu.max")) as file:
            quota, period = file.read().split()[:2]
        if quota == "max":
            return None
        return -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as file:
            quota = int(file.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as file:
            period = int(file.read())
        return None if quota <= 0 else -(-quota // period)
    except (OSError, ValueError):
        return None


def host_threads(cores: int) -> dict[str, int]:
    """Default threads per stage for a host with `cores` cores (at least 2 each)."""
    return {
        "read": max(2, cores // 4),
        "trajectory": max(2, cores // 4),
        "frame": max(2, cores // 2),
    }


def as_written(fn: Callable) -> Callable:
    """`fn` for a tf.data map or filter, traced as written.

    tf.data otherwise rewrites every function with AutoGraph (Python control flow on tensors ->
    `tf.cond` / `tf.while_loop`). The transforms here branch with `tf.cond` / `tf.where`
    themselves, so the rewrite only costs time: about a quarter of building the pipeline (the
    25-dataset OXE mix on 2 cores: 31 s -> 23 s). Python control flow on a tensor in such a
    function then fails loudly at trace time instead of being converted.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def element_seeds(dataset: tf.data.Dataset, seed: int, salt: int) -> tf.data.Dataset:
    """Pairs each element with a stateless seed int64[2] derived from (seed, salt, position)."""
    base = tf.constant([seed, salt], tf.int64)

    def attach(index, element):
        mixed = tf.random.experimental.stateless_fold_in(base, index)
        return element, mixed

    return dataset.enumerate().map(as_written(attach))


def apply_options(dataset: tf.data.Dataset, parallelism: Parallelism) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    if parallelism.ram_budget_gb is not None:
        options.autotune.ram_budget = int(parallelism.ram_budget_gb * (1 << 30))
    return dataset.with_options(options)


def skip_function_graph_optimization() -> None:
    """Turns off Grappler's rewrites of the functions TensorFlow runs (tf.data's maps and
    filters) for this process, as they are instantiated; tf.data's own graph rewrites (fusion,
    parallelism, autotuning) are not affected.

    Each of a dataset's functions is optimized when an iterator first runs it: for the 25
    datasets of `oxe_magic_soup` that was 5.6 s of a 12.9 s first batch and 2.7 s of a fresh
    statistics pass (2-core CPU), paid on every host at every restart. The functions are
    decoding, resizing and reshaping, whose kernels the rewrites do not speed up: Bridge ran at
    412-421 frames/s with them and 408-416 without (scripts/benchmark_data.py, 2 runs each).
    """
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


class TrajectoryDataset:
    """A tf.data.Dataset whose elements are whole trajectories (leaves with a leading T)."""

    def __init__(self, dataset: tf.data.Dataset, name: str, parallelism: Parallelism):
        self.dataset = dataset
        self.name = name
        self.parallelism = parallelism

    def _wrap(self, dataset: tf.data.Dataset) -> TrajectoryDataset:
        return TrajectoryDataset(dataset, self.name, self.parallelism)

    def map(self, fn: Map) -> TrajectoryDataset:
        return self._wrap(
            self.dataset.map(
                as_written(fn), num_parallel_calls=self.parallelism.trajectory, deterministic=True
            )
        )

    def map_seeded(self, fn: SeededMap, seed: int, salt: int) -> TrajectoryDataset:
        """Like `map`, with ``fn(traj, seed)`` getting a distinct stateless seed per trajectory."""
        seeded = element_seeds(self.dataset, seed, salt)
        return self._wrap(
            seeded.map(
                as_written(fn), num_parallel_calls=self.parallelism.trajectory, deterministic=True
            )
        )

    def apply(self, fn: Callable[[tf.data.Dataset], tf.data.Dataset]) -> TrajectoryDataset:
        return self._wrap(fn(self.dataset))

    def flatten(self) -> FrameDataset:
        """One element per timestep; every leaf must have the leading T axis."""
        frames = self.dataset.interleave(
            tf.data.Dataset.from_tensor_slices,
            cycle_length=TRAJECTORIES_INTERLEAVED,
            num_parallel_calls=min(TRAJECTORIES_INTERLEAVED, self.parallelism.trajectory),
            deterministic=True,
        )
        return FrameDataset(frames, self.name, self.parallelism)


class FrameDataset:
    """A tf.data.Dataset whose elements are single frames (schema stage 3, T removed)."""

    def __init__(self, dataset: tf.data.Dataset, name: str, parallelism: Parallelism):
        self.dataset = dataset
        self.name = name
        self.parallelism = parallelism

    def _wrap(self, dataset: tf.data.Dataset) -> FrameDataset:
        return FrameDataset(dataset, self.name, self.parallelism)

    def map(self, fn: Map) -> FrameDataset:
        return self._wrap(
            self.dataset.map(
                as_written(fn), num_parallel_calls=self.parallelism.frame, deterministic=True
            )
        )

    def map_seeded(self, fn: SeededMap, seed: int, salt: int) -> FrameDataset:
        seeded = element_seeds(self.dataset, seed, salt)
        return self._wrap(
            seeded.map(
                as_written(fn), num_parallel_calls=self.parallelism.frame, deterministic=True
            )
        )

    def shuffle(self, buffer_size: int, seed: int) -> FrameDataset:
        return self._wrap(self.dataset.shuffle(buffer_size, seed=seed))

    def apply(self, fn: Callable[[tf.data.Dataset], tf.data.Dataset]) -> FrameDataset:
        return self._wrap(fn(self.dataset))

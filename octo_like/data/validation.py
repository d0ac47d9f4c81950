"""Bad-input handling: every problem names the dataset, the episode and what is wrong.

Static problems (a configured key the dataset lacks) are found when the pipeline is built.
Per-episode problems (zero length, NaN/Inf in action or proprio) are found while reading: by
default they raise; with ``skip_bad_episodes`` the episode is dropped and counted in a log line.
"""

from __future__ import annotations

import collections
import logging
import threading

import tensorflow as tf

from octo_like import schema

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset does not match what the configuration expects."""


class SkippedEpisodes:
    """Thread-safe count of skipped episodes per (dataset, problem); logs every skip."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, dataset: bytes, episode: bytes, problem: bytes) -> None:
        key = (dataset.decode(), problem.decode())
        with self._lock:
            self.counts[key] += 1
            total = sum(self.counts.values())
        log.warning(
            "skipped episode %s of %s: %s (%d skipped so far in this pipeline)",
            episode.decode(),
            key[0],
            key[1],
            total,
        )


def trajectory_problem(traj: dict) -> tf.Tensor:
    """string scalar: b"" for a good standardized trajectory, else what is wrong with it."""
    action = traj[schema.ACTION]
    proprio = traj["observation"][schema.PROPRIO]
    length = tf.shape(action)[0]
    return tf.case(
        [
            (tf.equal(length, 0), lambda: tf.constant("zero-length episode")),
            (
                tf.logical_not(tf.reduce_all(tf.math.is_finite(action))),
                lambda: tf.constant("NaN/Inf in action"),
            ),
            (
                tf.logical_not(tf.reduce_all(tf.math.is_finite(proprio))),
                lambda: tf.constant("NaN/Inf in proprio"),
            ),
        ],
        default=lambda: tf.constant(""),
    )


def check_trajectories(
    trajectories: tf.data.Dataset,
    dataset_name: str,
    *,
    skip_bad_episodes: bool,
    skipped: SkippedEpisodes | None = None,
) -> tf.data.Dataset:
    """Raises on (or, with `skip_bad_episodes`, drops and counts) malformed trajectories.

    Input elements are standardized trajectories (schema stage 2) carrying ``episode_id``.
    """
    skipped = skipped or SkippedEpisodes()

    def raise_if_bad(traj):
        problem = trajectory_problem(traj)
        assertion = tf.debugging.Assert(
            tf.equal(problem, ""),
            [f"dataset {dataset_name!r}, episode", traj[schema.EPISODE_ID], ":", problem],
        )
        with tf.control_dependencies([assertion]):
            return tf.nest.map_structure(tf.identity, traj)

    def keep_if_good(traj):
        problem = trajectory_problem(traj)
        good = tf.equal(problem, "")

        def log_skip():
            recorded = tf.numpy_function(
                lambda e, p: skipped.record(dataset_name.encode(), e, p) or True,
                [traj[schema.EPISODE_ID], problem],
                tf.bool,
                stateful=True,
            )
            return tf.logical_not(tf.reshape(recorded, []))

        return tf.cond(good, lambda: tf.constant(True), log_skip)

    if skip_bad_episodes:
        return trajectories.filter(keep_if_good)
    return trajectories.map(raise_if_bad)

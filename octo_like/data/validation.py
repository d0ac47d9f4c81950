"""Bad-input handling: every problem names the dataset, the episode and what is wrong.

Static problems (a configured key the dataset lacks, too few action dims) are found when the
pipeline is built. Per-episode problems (NaN/Inf or values beyond ±`VALUE_LIMIT` in action or
proprio, raw or standardized; an instruction that is not valid UTF-8; wrongly sized or
undecodable images: `raw_checks.py`) are found while reading: by default they
raise `DataError` (`data_errors` turns tf.data's InvalidArgumentError back into it); with
``skip_bad_episodes`` the episode is dropped and counted in a log line. A truncated or corrupt
shard is named the same way (dataset, file, record index, byte offset) or, with
``skip_bad_episodes``, the rest of it is skipped and counted (`rlds.read_episodes`). An episode
left empty by standardization (a valid 1-step Bridge episode loses its only step to
relabelling) is always dropped and counted: it holds nothing to learn from, and nothing is
wrong with the data.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator

import tensorflow as tf

from octo_like import schema
from octo_like.data.dataset import as_written
from octo_like.normalization import VALUE_LIMIT

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset does not match what the configuration expects."""


class SkippedEpisodes:
    """Thread-safe count of skipped episodes per (dataset, problem); logs every skip."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, dataset: bytes, episode: bytes, problem: bytes) -> None:
        key = (dataset.decode(errors="replace"), problem.decode(errors="replace"))
        with self._lock:
            self.counts[key] += 1
            total = sum(self.counts.values())
        log.warning(
            "skipped episode %s of %s: %s (%d skipped so far in this pipeline)",
            episode.decode(errors="replace"),
            key[0],
            key[1],
            total,
        )


def trajectory_problem(traj: dict) -> tf.Tensor:
    """string scalar: b"" for a good standardized trajectory, else what is wrong with it."""
    checks = [
        value_problem(traj[schema.ACTION], "action"),
        value_problem(traj["observation"][schema.PROPRIO], "proprio"),
        text_problem(traj["task"][schema.LANGUAGE], f"task/{schema.LANGUAGE}"),
    ]
    return first_problem(checks)


def first_problem(checks: list[tf.Tensor]) -> tf.Tensor:
    """The first non-empty string of `checks` (string scalars), else b""."""
    problem = tf.constant("")
    for check in reversed(checks):
        problem = tf.where(tf.equal(check, ""), problem, check)
    return problem


# The checks below are traced once per process, as functions of tensors (the field's path is a
# string tensor, not a constant), and every dataset's pipeline calls the one traced graph: traced
# per dataset and field, their conditionals were half of building a 25-dataset pipeline.
_MATRIX_F64 = tf.TensorSpec([None, None], tf.float64)
_VECTOR_STR = tf.TensorSpec([None], tf.string)
_STR = tf.TensorSpec([], tf.string)


def value_problem(values: tf.Tensor, path: str, nan_prefix: str = "NaN/Inf in ") -> tf.Tensor:
    """b"" when `values` (float[T, ...]) are finite and within ±VALUE_LIMIT, else the first bad
    one's step and flat dimension: ``NaN/Inf in action at step 3`` or ``action at step 3,
    dim 1, is 3e+38, beyond +-1.84e+19 (...)``."""
    if not values.dtype.is_floating:
        return tf.constant("")
    flat = tf.cast(tf.reshape(values, [tf.shape(values)[0], -1]), tf.float64)
    return _first_bad_value(flat, tf.constant(path), tf.constant(nan_prefix))


@tf.function(input_signature=[_MATRIX_F64, _STR, _STR], autograph=False)
def _first_bad_value(flat: tf.Tensor, path: tf.Tensor, nan_prefix: tf.Tensor) -> tf.Tensor:
    non_finite = ~tf.math.is_finite(flat)
    huge = tf.math.is_finite(flat) & (tf.abs(flat) > VALUE_LIMIT)

    def first(bad):  # (step, dim) of the first True of bad[T, D]
        index = tf.argmax(tf.cast(tf.reshape(bad, [-1]), tf.int32), output_type=tf.int64)
        width = tf.cast(tf.shape(bad)[1], tf.int64)
        return index // width, index % width

    def describe_huge():
        step, dim = first(huge)
        value = tf.gather_nd(flat, [[step, dim]])[0]
        return tf.strings.join([
            path, " at step ", tf.strings.as_string(step), ", dim ", tf.strings.as_string(dim),
            ", is ", tf.strings.as_string(value, scientific=True, precision=3),
            f", beyond +-{VALUE_LIMIT:.3g} (its square overflows float32; it would ruin the "
            "dimension's statistics): a logging error? fix or skip the episode",
        ])  # fmt: skip

    def describe_non_finite():
        step, _ = first(non_finite)
        return tf.strings.join([nan_prefix, path, " at step ", tf.strings.as_string(step)])

    return tf.case(
        [
            (tf.reduce_any(non_finite), describe_non_finite),
            (tf.reduce_any(huge), describe_huge),
        ],
        default=lambda: tf.constant(""),
    )


def text_problem(texts: tf.Tensor, path: str) -> tf.Tensor:
    """b"" when every string of `texts` (string[T]) is valid UTF-8, else the first bad step and
    the text with U+FFFD where its bytes are not UTF-8 (the tokenizer would fail on them, at
    model init or mid-run, naming no dataset or episode)."""
    if texts.dtype != tf.string:
        return tf.constant("")
    return _first_bad_text(tf.reshape(texts, [-1]), tf.constant(path))


@tf.function(input_signature=[_VECTOR_STR, _STR], autograph=False)
def _first_bad_text(flat: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    shown = tf.strings.unicode_transcode(
        flat, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    bad = tf.not_equal(shown, flat)

    def describe():
        step = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
        return tf.strings.join([
            path, " at step ", tf.strings.as_string(step), " is not valid UTF-8: '",
            tf.strings.substr(tf.gather(shown, step), 0, 80, unit="UTF8_CHAR"),
            "' (U+FFFD marks the bad bytes); write instructions as UTF-8 text",
        ])  # fmt: skip

    return tf.cond(tf.reduce_any(bad), describe, lambda: tf.constant(""))


EMPTY_EPISODE = "empty after standardization (e.g. a 1-step episode relabelled)"


def check_trajectories(
    trajectories: tf.data.Dataset,
    dataset_name: str,
    *,
    skip_bad_episodes: bool,
    skipped: SkippedEpisodes | None = None,
) -> tf.data.Dataset:
    """Drops and counts empty trajectories; raises on (or, with `skip_bad_episodes`, drops and
    counts) malformed ones. Elements are standardized trajectories (schema stage 2)."""
    skipped = skipped or SkippedEpisodes()
    episode = lambda traj: traj[schema.EPISODE_ID]  # noqa: E731
    empty = lambda traj: tf.where(  # noqa: E731
        tf.equal(tf.shape(traj[schema.ACTION])[0], 0), EMPTY_EPISODE, ""
    )
    trajectories = apply_check(
        trajectories, empty, episode, dataset_name, skip_bad_episodes=True, skipped=skipped
    )
    return apply_check(
        trajectories,
        trajectory_problem,
        episode,
        dataset_name,
        skip_bad_episodes=skip_bad_episodes,
        skipped=skipped,
    )


def apply_check(
    trajectories: tf.data.Dataset,
    problem_of: Callable[[dict], tf.Tensor],
    episode_of: Callable[[dict], tf.Tensor],
    dataset_name: str,
    *,
    skip_bad_episodes: bool,
    skipped: SkippedEpisodes,
) -> tf.data.Dataset:
    """Raises when ``problem_of(traj)`` is not b"" (naming dataset and episode), or drops the
    trajectory and records it in `skipped`."""

    def raise_if_bad(traj):
        problem = problem_of(traj)
        assertion = tf.debugging.Assert(
            tf.equal(problem, ""),
            [f"dataset {dataset_name!r}, episode", episode_of(traj), ":", problem],
        )
        with tf.control_dependencies([assertion]):
            return tf.nest.map_structure(tf.identity, traj)

    def keep_if_good(traj):
        problem = problem_of(traj)
        good = tf.equal(problem, "")

        def log_skip():
            recorded = tf.numpy_function(
                lambda e, p: skipped.record(dataset_name.encode(), e, p) or True,
                [episode_of(traj), problem],
                tf.bool,
                stateful=True,
            )
            return tf.logical_not(tf.reshape(recorded, []))

        return tf.cond(good, lambda: tf.constant(True), log_skip)

    if skip_bad_episodes:
        return trajectories.filter(as_written(keep_if_good))
    return trajectories.map(as_written(raise_if_bad))


_ASSERTION = re.compile(r"assertion failed: (.*)", re.S)


def data_error_message(error: tf.errors.OpError) -> str | None:
    """The project's message inside a tf.data assertion failure, or None for another error.

    ``assertion failed: [dataset 'x', episode] [id] [:] [problem]`` -> ``dataset 'x',
    episode id: problem``."""
    match = _ASSERTION.search(error.message or "")
    if match is None or "[dataset " not in match.group(1):
        return None
    text = match.group(1).split("\n")[0].replace("\\'", "'")
    parts = re.findall(r"\[(.*?)\](?=\s|$)", text)
    return " ".join(parts).replace(" : ", ": ").replace(" :", ":") if parts else text


@contextlib.contextmanager
def data_errors(locate: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Re-raises tf.data failures as `DataError`: the project's own checks with their message;
    other failures (e.g. an image that does not decode) with what `locate()` finds."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        message = data_error_message(error)
        if message is not None:
            raise DataError(message) from error
        where = locate() if locate is not None else None
        raise DataError(
            (where or f"reading the data failed: {tf_error_text(error.message or '')}")
            + "; set data.skip_bad_episodes=True to skip such episodes (they are counted)"
        ) from error


def tf_error_text(message: str) -> str:
    """The first line of a TensorFlow error without its graph-node and op decorations
    (``{{node ...}}``, ``[Op:...]``, ``[[...]]``), at most 300 characters."""
    cleaned = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]|\[\[.*?\]\]", "", message)
    lines = [line.strip() for line in cleaned.splitlines() if line.strip()]
    return (lines[0] if lines else message)[:300]

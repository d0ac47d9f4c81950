"""Statistics cached as JSON, keyed by a fingerprint of the dataset's identity and of the
transforms that change actions or proprio; `load_or_compute_statistics` is what pipelines call.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from octo_like.data.statistics import STATISTICS_FORMAT, compute_statistics
from octo_like.data.validation import data_errors
from octo_like.normalization import DatasetStatistics

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)


def _jsonable(value: Any, where: str) -> Any:
    """Canonical JSON value: enums by value, tuples as lists, numpy as Python; else an error."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} is {value}; fingerprints need finite numbers")
        return value
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where} has non-string keys {bad}")
        return {k: _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where} is a {type(value).__name__}, which has no stable JSON form; "
        "describe it by name (e.g. the registered function's name) instead"
    )


def dataset_identity(source: str | Any) -> dict[str, Any]:
    """Name, version, split sizes and features of a prepared TFDS dataset.

    `source` is its version directory (``.../bridge_dataset/1.0.0``, gs:// works) or a
    `tfds.core.DatasetInfo`; both give the same dict for the same dataset.
    """
    import tensorflow as tf

    if isinstance(source, str):
        try:
            with tf.io.gfile.GFile(os.path.join(source, "dataset_info.json")) as f:
                info = json.loads(f.read())
            with tf.io.gfile.GFile(os.path.join(source, "features.json")) as f:
                features = json.loads(f.read())
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(f"{source} is not a prepared TFDS dataset directory: {e}") from e
        splits = {
            s["name"]: {
                "num_examples": sum(int(n) for n in s.get("shardLengths", [])),
                "num_bytes": int(s.get("numBytes", 0)),
            }
            for s in info.get("splits", [])
        }
        name, version = info.get("name"), info.get("version")
    else:
        from google.protobuf import json_format  # a TensorFlow dependency

        splits = {
            k: {"num_examples": int(v.num_examples), "num_bytes": int(v.num_bytes)}
            for k, v in source.splits.items()
        }
        features = json_format.MessageToDict(source.features.to_proto())
        name, version = source.name, str(source.version)
    return {"name": name, "version": version, "splits": splits, "features": features}


def statistics_fingerprint(dataset_info: Mapping | str, transforms: Mapping) -> str:
    """sha256 hex digest of the canonical JSON of the dataset identity and the transforms.

    `dataset_info` is a TFDS version directory (read with `dataset_identity`) or a JSON-able
    mapping that identifies the data. `transforms` must name everything that changes actions or
    proprio before statistics (standardization function name, proprio key, action encoding,
    ...), as JSON-able values; key order does not matter, anything else does.
    """
    identity = dataset_identity(dataset_info) if isinstance(dataset_info, str) else dataset_info
    payload = {
        "statistics_format": STATISTICS_FORMAT,
        "dataset": _jsonable(identity, "dataset_info"),
        "transforms": _jsonable(transforms, "transforms"),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def statistics_cache_path(cache_dir: str, fingerprint: str, name: str = "") -> str:
    """``<cache_dir>/<name>_<fingerprint>.json`` (just ``<fingerprint>.json`` without a name)."""
    if not fingerprint or not all(c.isalnum() or c in "-_" for c in fingerprint):
        raise ValueError(f"fingerprint {fingerprint!r} must be a non-empty [A-Za-z0-9_-] string")
    if "/" in name or "\\" in name:
        raise ValueError(f"statistics name {name!r} must not contain path separators")
    if cache_dir.startswith("~"):
        cache_dir = os.path.expanduser(cache_dir)
    return os.path.join(cache_dir, f"{name}_{fingerprint}.json" if name else f"{fingerprint}.json")


def load_or_compute_statistics(
    make_trajectories: Callable[[], tf.data.Dataset | Iterable[Mapping]],
    *,
    fingerprint: str,
    cache_dir: str,
    force: bool = False,
    name: str = "",
    locate: Callable[[], str | None] | None = None,
    **compute_kwargs: Any,
) -> DatasetStatistics:
    """Cached statistics if present, else `compute_statistics(make_trajectories())`, saved.

    `make_trajectories` is only called on a cache miss or with `force=True`. `compute_kwargs`
    (action_key, proprio_key, progress) go to `compute_statistics` and must be reflected in
    `fingerprint`. `locate`: names an image that fails to decode (see `validation.data_errors`).
    An unreadable cache file, or one holding non-finite or out-of-range values (written before
    they were refused), is logged and recomputed. Concurrent writers (e.g.
    several hosts) are safe: each write is atomic and all write the same content.
    """
    if not force:
        stats = cached_statistics(cache_dir, fingerprint, name)
        if stats is not None:
            return stats
    return compute_and_cache_statistics(
        make_trajectories,
        fingerprint=fingerprint,
        cache_dir=cache_dir,
        name=name,
        locate=locate,
        reason="forced" if force else "cache miss",
        **compute_kwargs,
    )


def compute_and_cache_statistics(
    make_trajectories: Callable[[], tf.data.Dataset | Iterable[Mapping]],
    *,
    fingerprint: str,
    cache_dir: str,
    name: str = "",
    locate: Callable[[], str | None] | None = None,
    reason: str = "cache miss",
    **compute_kwargs: Any,
) -> DatasetStatistics:
    """`compute_statistics(make_trajectories())`, written to the cache (`reason`: why, logged);
    the arguments as `load_or_compute_statistics`'."""
    path = statistics_cache_path(cache_dir, fingerprint, name)
    label = name or "dataset"
    logger.info("statistics of %s: computing (%s), will write %s", label, reason, path)
    started = time.monotonic()
    with data_errors(locate):  # a bad episode met here is named, as in the pipeline
        stats = compute_statistics(make_trajectories(), name=name, **compute_kwargs)
    stats.save_json(path)
    logger.info(
        "statistics of %s: %d trajectories, %d transitions in %.1f s, wrote %s",
        label, stats.num_trajectories, stats.num_transitions, time.monotonic() - started, path,
    )  # fmt: skip
    return stats


def cached_statistics(cache_dir: str, fingerprint: str, name: str = "") -> DatasetStatistics | None:
    """The statistics cached under `fingerprint`, or None when absent or unreadable (an
    unreadable file, or one holding values no computation gives now, is logged)."""
    import tensorflow as tf

    path = statistics_cache_path(cache_dir, fingerprint, name)
    label = name or "dataset"
    if not tf.io.gfile.exists(path):
        return None
    try:
        stats = DatasetStatistics.load_json(path, label)
    except ValueError as e:  # unreadable, or values no computation gives now (non-finite)
        logger.warning("statistics of %s: ignoring unreadable cache (%s); recomputing", label, e)
        return None
    logger.info("statistics of %s: loaded from cache %s", label, path)
    return stats


def latest_cached_statistics(cache_dir: str, name: str) -> tuple[str, DatasetStatistics] | None:
    """The most recently written ``<name>_<fingerprint>.json`` in `cache_dir`, whatever its
    fingerprint (what the dataset held when it was computed), or None."""
    import tensorflow as tf

    cache_dir = os.path.expanduser(cache_dir)
    pattern = os.path.join(cache_dir, f"{name}_*.json")
    own = re.compile(re.escape(name) + r"_[0-9a-f]+\.json")  # not "<name>_other_<fp>.json"
    paths = [p for p in tf.io.gfile.glob(pattern) if own.fullmatch(os.path.basename(p))]
    if not paths:
        return None
    path = max(paths, key=lambda p: tf.io.gfile.stat(p).mtime_nsec)
    return path, DatasetStatistics.load_json(path, name)


def statistics_drift(
    cached: DatasetStatistics,
    sample: DatasetStatistics,
    *,
    max_mean_shift: float = 0.5,
    std_ratio_range: tuple[float, float] = (0.5, 2.0),
) -> dict[str, Any]:
    """How far statistics recomputed on a sample are from cached ones, per key.

    Per key: the largest |mean difference| in cached standard deviations and the extreme ratios
    of sampled to cached std, over the dimensions; ``drift`` is True when a mean moved more than
    `max_mean_shift` stds or a std ratio left `std_ratio_range` (a few dozen episodes estimate a
    mean to ~0.2 std, so these bounds flag rewritten data, not sampling noise).
    """
    report: dict[str, Any] = {"drift": False}
    pairs = {"action": (cached.action, sample.action), "proprio": (cached.proprio, sample.proprio)}
    for key, (old, new) in pairs.items():
        if old is None or new is None:
            if (old is None) != (new is None):
                report[key] = {"problem": "present in only one of cached and sampled statistics"}
                report["drift"] = True
            continue
        if old.mean.shape != new.mean.shape:
            report[key] = {"problem": f"{old.mean.shape[0]} dims cached, {new.mean.shape[0]} now"}
            report["drift"] = True
            continue
        scale = np.maximum(old.std, 1e-6)
        shift = np.abs(new.mean - old.mean) / scale
        varying = old.std > 1e-6  # constant dimensions (e.g. padding) have no std ratio
        ratio = new.std[varying] / old.std[varying] if varying.any() else np.ones(1)
        entry = {
            "max_mean_shift_in_std": round(float(shift.max()), 4),
            "worst_dim": int(shift.argmax()),
            "std_ratio_min": round(float(ratio.min()), 4),
            "std_ratio_max": round(float(ratio.max()), 4),
        }
        entry["drift"] = bool(
            shift.max() > max_mean_shift
            or ratio.min() < std_ratio_range[0]
            or ratio.max() > std_ratio_range[1]
        )
        report[key] = entry
        report["drift"] |= entry["drift"]
    return report

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
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from octo_like.data.statistics import STATISTICS_FORMAT, compute_statistics
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
    **compute_kwargs: Any,
) -> DatasetStatistics:
    """Cached statistics if present, else `compute_statistics(make_trajectories())`, saved.

    `make_trajectories` is only called on a cache miss or with `force=True`. `compute_kwargs`
    (action_key, proprio_key, progress) go to `compute_statistics` and must be reflected in
    `fingerprint`. An unreadable cache file is logged and recomputed. Concurrent writers (e.g.
    several hosts) are safe: each write is atomic and all write the same content.
    """
    import tensorflow as tf

    path = statistics_cache_path(cache_dir, fingerprint, name)
    label = name or "dataset"
    if not force and tf.io.gfile.exists(path):
        try:
            stats = DatasetStatistics.load_json(path)
        except ValueError as e:
            logger.warning(
                "statistics of %s: ignoring unreadable cache (%s); recomputing", label, e
            )
        else:
            logger.info("statistics of %s: loaded from cache %s", label, path)
            return stats
    reason = "forced" if force else "cache miss"
    logger.info("statistics of %s: computing (%s), will write %s", label, reason, path)
    started = time.monotonic()
    stats = compute_statistics(make_trajectories(), **compute_kwargs)
    stats.save_json(path)
    logger.info(
        "statistics of %s: %d trajectories, %d transitions in %.1f s, wrote %s",
        label, stats.num_trajectories, stats.num_transitions, time.monotonic() - started, path,
    )  # fmt: skip
    return stats

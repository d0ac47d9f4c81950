"""What a dataset split holds, cheaply: the part of the statistics cache key that notices an
in-place rewrite.

`dataset_identity` (name, version, split sizes, features) does not change when a shard is
replaced by one of the same size with different actions, so statistics keyed by it alone go
stale silently. `split_content_key` adds, per shard file: its name, size, modification time and
a SHA-256 of sampled bytes; the whole split is hashed when it is small (<= `FULL_HASH_BYTES`,
e.g. the Bridge test shard), otherwise `SAMPLES` blocks of `BLOCK_BYTES` spread over each shard
(first and last included), read by `THREADS` threads. Cost: one stat and `SAMPLES` small reads
per shard (measured in docs/data.md).

Size, modification time and sampled blocks can all survive a rewrite: a tool that rewrites a
large shard in place and restores its modification time (``touch -r``, ``os.utime``, a copy
with ``-p`` over the old file) while changing bytes between the sampled blocks kept the key,
and a run used stale statistics. So a local shard also contributes its inode change time
(``st_ctime_ns``: the kernel sets it on every write, rename into place or ``utime``, and no
call sets it back) and its inode number (a file replaced by another). On gs:// the
modification time is the object's server-set update time, which every write changes. A copy of
the dataset (new inodes) or a ``chmod`` changes the key and costs one recomputation.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from octo_like.data.splits import split_names
from octo_like.storage import retry_transient

FULL_HASH_BYTES = 64 << 20  # splits up to this size are hashed whole
SAMPLES = 4  # blocks per shard: first, last and two between
BLOCK_BYTES = 4096
THREADS = 32


def split_files(builder: Any, split: str) -> list[str]:
    """The shard files of `split` (``"train"``, ``"train[:90%]"`` -> the train shards; ``"all"``
    or ``"train+val"`` -> those of each split)."""
    return [
        os.fspath(path)
        for base in split_names(builder, split)
        for path in builder.info.splits[base].filepaths
    ]


def split_content_key(
    builder: Any, split: str, *, full_hash_bytes: int = FULL_HASH_BYTES
) -> dict[str, Any]:
    """The content key of `split`'s shards and the builder's dataset_info.json."""
    info = os.path.join(os.fspath(builder.data_dir), "dataset_info.json")
    return files_content_key(split_files(builder, split), info, full_hash_bytes=full_hash_bytes)


def files_content_key(
    files: Sequence[str], dataset_info: str, *, full_hash_bytes: int = FULL_HASH_BYTES
) -> dict[str, Any]:
    """{shard name: {size, mtime_ns, [ctime_ns, inode,] sha256 of sampled bytes}} plus
    dataset_info's digest; the split is hashed whole up to `full_hash_bytes`."""
    import tensorflow as tf

    with ThreadPoolExecutor(THREADS) as pool:  # latency-bound reads (disk seeks, GCS requests)
        stats = dict(zip(files, pool.map(_stat, files), strict=True))
        local = dict(zip(files, pool.map(_local_identity, files), strict=True))
        whole = sum(int(s.length) for s in stats.values()) <= full_hash_bytes
        digests = pool.map(
            lambda path: retry_transient(
                lambda: _digest(path, int(stats[path].length), whole), path
            ),
            files,
        )
        key: dict[str, Any] = {"sampling": "whole" if whole else f"{SAMPLES}x{BLOCK_BYTES}"}

        def read_info() -> bytes:
            with tf.io.gfile.GFile(dataset_info, "rb") as f:
                return f.read()

        info_bytes = retry_transient(read_info, dataset_info)
        key["dataset_info_sha256"] = hashlib.sha256(info_bytes).hexdigest()
        for path, digest in zip(files, digests, strict=True):
            key[os.path.basename(path)] = {
                "size": int(stats[path].length),
                "mtime_ns": int(stats[path].mtime_nsec),
                **local[path],
                "sha256": digest,
            }
    return key


def _local_identity(path: str) -> dict[str, int]:
    """{ctime_ns, inode} of a local file (module docstring: what a rewrite cannot keep); {} for
    a URL, whose modification time is set by the store."""
    if "://" in path:
        return {}
    status = os.stat(path)
    return {"ctime_ns": status.st_ctime_ns, "inode": status.st_ino}


def _stat(path: str):
    """`tf.io.gfile.stat`, retried on transient URL errors; a missing shard is named."""
    import tensorflow as tf

    try:
        return retry_transient(lambda: tf.io.gfile.stat(path), path)
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(
            f"shard {path} (listed in dataset_info.json) is missing: copy it with the dataset"
        ) from error


def _digest(path: str, size: int, whole: bool) -> str:
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        if whole:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
            return digest.hexdigest()
        for offset in sample_offsets(size):
            f.seek(offset)
            digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()


def sample_offsets(size: int, samples: int = SAMPLES, block: int = BLOCK_BYTES) -> Sequence[int]:
    """`samples` block starts spread evenly over a file of `size` bytes, first and last block
    included (fewer when the file is small)."""
    last = max(size - block, 0)
    if samples < 2 or last == 0:
        return [0]
    return sorted({round(i * last / (samples - 1)) for i in range(samples)})

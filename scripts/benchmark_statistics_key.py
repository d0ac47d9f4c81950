"""How long the statistics cache key takes: on a prepared dataset, or on synthetic shards.

    python scripts/benchmark_statistics_key.py --data_dir ../shared/data/bridge_dataset/1.0.0
    python scripts/benchmark_statistics_key.py --synthetic_gb 10 --workdir /tmp/key_bench

The key (`octo_like/data/content_key.py`) stats every shard of the split and hashes sampled
bytes of each (the whole split when it is small). --synthetic_gb writes that many GB of random
bytes as --shards shard files under --workdir (removed afterwards unless --keep) and times the
key of those files. Prints the time of a first and a repeated computation (the first may hit the
OS page cache if the files were just written or read), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=None, help="a prepared TFDS version directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--synthetic_gb", type=float, default=None)
    parser.add_argument("--shards", type=int, default=1024)
    parser.add_argument("--workdir", default="/tmp/octo_like_key_benchmark")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def write_synthetic(workdir: str, gigabytes: float, shards: int) -> tuple[list[str], str]:
    """Random shard files totalling `gigabytes`, plus a dataset_info.json; returns paths."""
    import numpy as np

    os.makedirs(workdir, exist_ok=True)
    rng = np.random.default_rng(0)
    per_shard = int(gigabytes * 1e9 / shards)
    block = rng.bytes(1 << 20)  # 1 MiB of random bytes, varied per shard by a header
    files = []
    for index in range(shards):
        path = os.path.join(workdir, f"synthetic-train.tfrecord-{index:05d}-of-{shards:05d}")
        if not os.path.exists(path) or os.path.getsize(path) != per_shard:
            with open(path, "wb") as f:
                written = 0
                while written < per_shard:
                    chunk = (index.to_bytes(8, "little") + block)[: per_shard - written]
                    f.write(chunk)
                    written += len(chunk)
        files.append(path)
    info = os.path.join(workdir, "dataset_info.json")
    with open(info, "w") as f:
        json.dump({"name": "synthetic", "shards": shards, "bytes_per_shard": per_shard}, f)
    return files, info


def main(argv=None) -> dict:
    args = parse_args(argv)
    from octo_like.data import content_key

    if args.synthetic_gb is not None:
        files, info = write_synthetic(args.workdir, args.synthetic_gb, args.shards)
        compute = lambda: content_key.files_content_key(files, info)  # noqa: E731
        label = f"synthetic {args.synthetic_gb} GB in {args.shards} shards"
    elif args.data_dir:
        from octo_like.data import builder_dir

        builder = builder_dir.open_builder(args.data_dir)
        files = content_key.split_files(builder, args.split)
        compute = lambda: content_key.split_content_key(builder, args.split)  # noqa: E731
        label = f"{builder.info.name} {args.split}"
    else:
        raise SystemExit("give --data_dir or --synthetic_gb")
    total = sum(os.path.getsize(f) if os.path.exists(f) else 0 for f in files)
    times = []
    for _ in range(max(args.repeats, 1)):
        start = time.perf_counter()
        key = compute()
        times.append(time.perf_counter() - start)
    if args.synthetic_gb is not None and not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"{label}: {len(files)} shards, {total / 1e9:.3f} GB, sampling {key['sampling']}")
    repeats = ", ".join(f"{t:.4f}" for t in times[1:])
    print(f"key seconds: first {times[0]:.4f}, then {repeats}")
    result = {
        "dataset": label,
        "shards": len(files),
        "gigabytes": round(total / 1e9, 3),
        "sampling": key["sampling"],
        "first_seconds": round(times[0], 4),
        "repeat_seconds": [round(t, 4) for t in times[1:]],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

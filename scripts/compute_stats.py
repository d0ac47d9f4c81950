"""Compute (or load from cache) normalization statistics of a dataset or a named mix.

    python scripts/compute_stats.py --data_dir ../shared/data/bridge_dataset/1.0.0
    python scripts/compute_stats.py --mix oxe_magic_soup --data_dir /data/oxe [--force]
    python scripts/compute_stats.py --data_dir ../shared/data/bridge_dataset/1.0.0 --check

Statistics are cached as JSON keyed by a hash of the dataset info, of what its shards hold
(size, modification and change times, sampled bytes: `octo_like/data/content_key.py`) and of
the transforms; the pipeline reads the same cache. Prints one JSON object per dataset.

--check recomputes statistics on --check_episodes episodes spread over the split and reports
their drift from the cached statistics (those of the current content, else the newest cached
for the dataset, i.e. from before a rewrite); exits 1 if any dataset drifted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from octo_like.host import lean_tensorflow  # noqa: E402  (imports nothing)

lean_tensorflow()  # as train.py: before TensorFlow is imported


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="prepared TFDS dir, or the data root")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", default=None, help="registry name (default: the builder's)")
    group.add_argument("--mix", default=None, help="a named mix; --data_dir is then the root")
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--spec", default=None, help="DatasetSpec JSON of a dataset outside the registry"
    )
    parser.add_argument("--force", action="store_true", help="recompute even if cached")
    parser.add_argument(
        "--check", action="store_true", help="report drift of a sample from the cached statistics"
    )
    parser.add_argument("--check_episodes", type=int, default=32)
    parser.add_argument("--statistics_cache_dir", default="~/.cache/octo_like/statistics")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like.data import builder_dir
    from octo_like.data.oxe.mixes import resolve_mix
    from octo_like.data.oxe.registry import get_dataset_spec
    from octo_like.data.prepare import standardized_trajectories, statistics_fingerprint_for
    from octo_like.data.statistics_cache import load_or_compute_statistics

    if args.mix:
        entries = [(spec, args.data_dir) for spec, _ in resolve_mix(args.mix)]
    else:
        builder = builder_dir.open_builder(args.data_dir)
        extra_specs = {}
        if args.spec:  # e.g. written by data/convert_raw_episodes.py --spec_out
            from octo_like.data.oxe.spec import DatasetSpec

            with open(args.spec) as file:
                spec = DatasetSpec.from_dict(json.load(file))
            extra_specs[spec.name] = spec
        name = args.dataset or builder.info.name
        entries = [(get_dataset_spec(name, extra_specs), args.data_dir)]
    results = {}
    for spec, location in entries:
        builder = builder_dir.open_builder(location if not args.mix else spec.name, location)
        cameras = tuple(c for c, k in spec.image_keys.items() if k) or ("primary",)
        if args.check:
            results[spec.name] = check_statistics(args, builder, spec, cameras)
            print(json.dumps({spec.name: results[spec.name]}))
            continue
        statistics = load_or_compute_statistics(
            lambda spec=spec, builder=builder, cameras=cameras: (
                standardized_trajectories(builder, spec, args.split, cameras).dataset
            ),
            fingerprint=statistics_fingerprint_for(builder, spec, args.split),
            cache_dir=os.path.expanduser(args.statistics_cache_dir),
            force=args.force,
            name=spec.name,
        )
        results[spec.name] = statistics.to_dict()
        print(json.dumps({spec.name: results[spec.name]}))
    return results


def check_statistics(args, builder, spec, cameras) -> dict:
    """{"status": ok | drift | no_cache, "cache": path, "drift": {...}} for one dataset."""
    from octo_like.data.prepare import standardized_trajectories, statistics_fingerprint_for
    from octo_like.data.statistics import compute_statistics
    from octo_like.data.statistics_cache import (
        latest_cached_statistics,
        statistics_cache_path,
        statistics_drift,
    )
    from octo_like.normalization import DatasetStatistics

    cache_dir = os.path.expanduser(args.statistics_cache_dir)
    fingerprint = statistics_fingerprint_for(builder, spec, args.split)
    current = statistics_cache_path(cache_dir, fingerprint, spec.name)
    if os.path.exists(current):
        cached = DatasetStatistics.load_json(current, spec.name)
        path, content = current, "current"
    else:
        found = latest_cached_statistics(cache_dir, spec.name)
        if found is None:
            return {"status": "no_cache", "cache_dir": cache_dir}
        (path, cached), content = found, "changed since cached"
    stride = max(1, cached.num_trajectories // max(args.check_episodes, 1))
    dataset = standardized_trajectories(builder, spec, args.split, cameras).dataset
    sample = compute_statistics(dataset.shard(stride, 0).take(args.check_episodes), name=spec.name)
    drift = statistics_drift(cached, sample)
    return {
        "status": "drift" if drift["drift"] else "ok",
        "cache": path,
        "content": content,
        "sampled_episodes": sample.num_trajectories,
        "drift": drift,
    }


if __name__ == "__main__":
    results = main()
    sys.exit(1 if any(r.get("status") == "drift" for r in results.values()) else 0)

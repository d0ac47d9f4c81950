"""Throughput and host memory of the full input pipeline on one dataset.

    python scripts/benchmark_data.py --data_dir ../shared/data/bridge_dataset/1.0.0 \
        --seconds 60 --resize 256 --augment

Prints progress, then as its last line one JSON object with frames_per_s, batches_per_s,
first_batch_s and rss_mb_{start,end,max}. `--path finetune` caches whole trajectories in RAM
(the small-dataset path), `--path pretrain` (default) streams them from disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from octo_like.host import lean_tensorflow  # noqa: E402  (imports nothing)

lean_tensorflow()  # as train.py: before TensorFlow is imported

import psutil  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="prepared TFDS dir or data root")
    parser.add_argument("--dataset", default=None, help="registry name (default: the builder's)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--resize", type=int, default=256, help="primary camera size")
    parser.add_argument("--wrist_size", type=int, default=128)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--action_horizon", type=int, default=4)
    parser.add_argument("--shuffle_buffer", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2, help="threads per pipeline stage")
    parser.add_argument("--ram_budget_gb", type=float, default=1.0)
    parser.add_argument("--path", choices=("pretrain", "finetune"), default="pretrain")
    parser.add_argument("--statistics_cache_dir", default="~/.cache/octo_like/statistics")
    return parser.parse_args(argv)


class RssSampler:
    """Samples this process's resident memory every 50 ms in a background thread."""

    def __init__(self):
        self.process = psutil.Process()
        self.start_mb = self.max_mb = self.current_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def _run(self):
        while not self._stop.wait(0.05):
            self.max_mb = max(self.max_mb, self.current_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        end = self.current_mb()
        self.max_mb = max(self.max_mb, end)
        return end


def main(argv=None) -> dict:
    args = parse_args(argv)
    rss = RssSampler()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like.data import builder_dir
    from octo_like.data.dataset import Parallelism
    from octo_like.data.pipeline import make_pipeline
    from octo_like.data.presets import single_dataset_config

    name = args.dataset or builder_dir.open_builder(args.data_dir).info.name
    config = single_dataset_config(
        args.data_dir,
        name,
        batch_size=args.batch_size,
        window=args.window,
        action_horizon=args.action_horizon,
        primary_size=args.resize,
        wrist_size=args.wrist_size,
        augment=args.augment,
        shuffle_buffer=args.shuffle_buffer,
        cache_trajectories=args.path == "finetune",
        statistics_cache_dir=args.statistics_cache_dir,
        parallelism=Parallelism(
            read=args.threads,
            trajectory=args.threads,
            frame=args.threads,
            ram_budget_gb=args.ram_budget_gb,
        ),
    )
    start = time.perf_counter()
    iterator = iter(make_pipeline(config))
    next(iterator)
    first_batch_s = time.perf_counter() - start
    print(f"first batch after {first_batch_s:.2f} s", file=sys.stderr)
    batches = 0
    timed_start = time.perf_counter()
    report_at = timed_start + 10
    while (now := time.perf_counter()) - timed_start < args.seconds:
        next(iterator)
        batches += 1
        if now >= report_at:
            rate = batches * args.batch_size / (now - timed_start)
            print(
                f"{now - timed_start:5.0f} s  {rate:7.1f} frames/s  rss {rss.current_mb():.0f} MB",
                file=sys.stderr,
            )
            report_at += 10
    elapsed = time.perf_counter() - timed_start
    rss_end = rss.stop()
    result = {
        "dataset": name,
        "path": args.path,
        "resize": args.resize,
        "augment": args.augment,
        "batch_size": args.batch_size,
        "window": args.window,
        "action_horizon": args.action_horizon,
        "shuffle_buffer": args.shuffle_buffer,
        "seconds": round(elapsed, 2),
        "batches": batches,
        "first_batch_s": round(first_batch_s, 2),
        "frames_per_s": round(batches * args.batch_size / elapsed, 1),
        "batches_per_s": round(batches / elapsed, 2),
        "rss_mb_start": round(rss.start_mb, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_max": round(rss.max_mb, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

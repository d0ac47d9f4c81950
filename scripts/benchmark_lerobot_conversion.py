"""How fast a LeRobot dataset converts to RLDS: decoding alone per codec, and the whole
conversion at 1 and at every core's worth of decoding processes.

    python scripts/benchmark_lerobot_conversion.py --source /tmp/lr_bench_av1 \
        [--source /tmp/lr_bench_h264] [--workers 1,2] [--out /tmp/lr_bench_out]

Make a source with tests/fixtures/lerobot/make_benchmark_dataset.py (LeRobot's own writer, in
its pinned environment). Prints one line per measurement: camera frames, seconds, frames/s.
Run it alone on the machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def codecs(source: str) -> str:
    with open(os.path.join(source, "meta", "info.json")) as file:
        features = json.load(file)["features"]
    found = {
        f.get("info", {}).get("video.codec") for f in features.values() if f.get("dtype") == "video"
    }
    return ",".join(sorted(c for c in found if c)) or "image"


def decode_only(source: str, episodes: int | None) -> tuple[int, float]:
    """Decodes the first `episodes` episodes' frames (all: None) in this process: (camera
    frames, seconds)."""
    from octo_like.data.lerobot import convert, frames

    by_episode, jobs = convert.decoding_jobs(source)
    jobs = jobs[:episodes]
    start, count = time.perf_counter(), 0
    for job in jobs:
        decoded = frames.decode_job(job, by_episode, frames.DEFAULT_TOLERANCE_S)
        count += sum(len(v) for v in decoded.values())
    return count, time.perf_counter() - start


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}")
    parser.add_argument("--out", default="/tmp/lerobot_conversion_benchmark")
    parser.add_argument(
        "--decode_episodes", type=int, default=None, help="episodes decoded alone (default: all)"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from octo_like.data.lerobot.convert import convert_lerobot
    from octo_like.data.lerobot.layout import read_info

    print(f"cpu count {os.cpu_count()}")
    for source in args.source:
        info = read_info(source)
        with open(os.path.join(source, "meta", "info.json")) as file:
            total = json.load(file)["total_frames"]
        frames = total * len(info.cameras)
        codec = codecs(source)
        shape = [info.features[k]["shape"] for k in info.cameras]
        print(f"{source}: {codec}, {total} steps x {len(info.cameras)} cameras {shape}")
        count, seconds = decode_only(source, args.decode_episodes)
        rate = count / seconds
        print(f"  decode only, 1 process: {count} frames in {seconds:.1f} s = {rate:.0f} frames/s")
        for workers in [int(w) for w in args.workers.split(",")]:
            shutil.rmtree(args.out, ignore_errors=True)
            start = time.perf_counter()
            convert_lerobot(source, args.out, "bench", workers=workers, verbose=False)
            seconds = time.perf_counter() - start
            print(
                f"  convert to RLDS (jpeg), {workers} decoding process(es): {frames} frames in "
                f"{seconds:.1f} s = {frames / seconds:.0f} frames/s"
            )
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()

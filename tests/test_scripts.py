"""The data scripts run end to end on the Bridge shard and print what they promise."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))

import benchmark_data  # noqa: E402
import compute_stats  # noqa: E402
import inspect_batch  # noqa: E402


def test_inspect_batch_prints_the_tree_and_writes_a_grid(bridge_dir, tmp_path, capsys):
    out = tmp_path / "batch.png"
    batch = inspect_batch.main(
        [
            "--data_dir", bridge_dir, "--batch_size", "3", "--window", "2",
            "--action_horizon", "4", "--resize", "64", "--out", str(out),
            "--statistics_cache_dir", str(tmp_path / "stats"),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "observation.image_primary" in printed and "(3, 2, 64, 64, 3)" in printed
    assert "action_pad_mask" in printed and "(3, 2, 4, 7)" in printed
    assert batch["action"].shape == (3, 2, 4, 7)
    image = np.asarray(Image.open(out))
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 10


def test_compute_stats_caches_and_force_recomputes(bridge_dir, tmp_path, caplog):
    argv = ["--data_dir", bridge_dir, "--statistics_cache_dir", str(tmp_path)]
    caplog.set_level("INFO")
    first = compute_stats.main(argv)["bridge_dataset"]
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert compute_stats.main(argv)["bridge_dataset"] == first
    assert cached[0].stat().st_mtime_ns == mtime
    compute_stats.main([*argv, "--force"])
    assert cached[0].stat().st_mtime_ns != mtime
    assert first["num_trajectories"] == 25
    assert len(first["action"]["mean"]) == 7


def test_benchmark_data_prints_json_last(bridge_dir, tmp_path, capsys):
    benchmark_data.main(
        [
            "--data_dir", bridge_dir, "--seconds", "2", "--resize", "64", "--augment",
            "--batch_size", "8", "--shuffle_buffer", "100",
            "--statistics_cache_dir", str(tmp_path),
        ]
    )  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("frames_per_s", "batches_per_s", "rss_mb_start", "rss_mb_end", "rss_mb_max"):
        assert result[key] > 0
    assert result["rss_mb_max"] >= result["rss_mb_end"]


def test_compute_stats_for_a_named_mix(bridge_dir, tmp_path):
    data_root = str(pathlib.Path(bridge_dir).parents[1])  # holds bridge_dataset/1.0.0
    result = compute_stats.main(
        ["--mix", "bridge", "--data_dir", data_root, "--statistics_cache_dir", str(tmp_path)]
    )
    assert set(result) == {"bridge_dataset"}
    assert result["bridge_dataset"]["num_transitions"] > 0

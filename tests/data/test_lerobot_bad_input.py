"""A damaged LeRobot dataset is refused naming the dataset, the episode and the file (or, with
skip_bad, the episode is left out and counted), and nothing half-written is left behind.

Each case damages a copy of the fixture made by LeRobot's own writer (tests/fixtures/lerobot),
after the healthy copy converted (`test_the_healthy_copy_converts`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from octo_like.data.episode_files import EpisodeError
from octo_like.data.lerobot.convert import convert_lerobot

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "lerobot"
FRONT = "videos/observation.images.front"
DATA0 = "data/chunk-000/file-000.parquet"  # episodes 0, 1, 2 of v30_av1


def copy(tmp_path, name="v30_av1") -> pathlib.Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def convert(source, out, **kwargs) -> str:
    kwargs.setdefault("workers", 1)
    return convert_lerobot(str(source), str(out), "robot", verbose=False, **kwargs)


def episode_indices(path: str) -> list[int]:
    builder = tfds.builder_from_directory(path)
    return sorted(
        int(e["episode_metadata"]["episode_index"])
        for split in builder.info.splits
        for e in tfds.as_numpy(builder.as_dataset(split=split))
    )


def rewrite_rows(path: pathlib.Path, change) -> None:
    """Rewrites a data parquet file through `change(columns: dict[str, list]) -> None`."""
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    change(columns)
    pq.write_table(pa.table(columns, schema=table.schema), path)


def test_the_healthy_copy_converts(tmp_path):
    path = convert(copy(tmp_path), tmp_path / "out")
    assert episode_indices(path) == [0, 1, 2, 3]


def refused(source, out, *needles, **kwargs) -> EpisodeError:
    with pytest.raises(EpisodeError) as caught:
        convert(source, out, **kwargs)
    message = str(caught.value)
    for needle in (str(source), *needles):
        assert needle in message, (needle, message)
    assert not (out / "robot" / "1.0.0" / "dataset_info.json").exists()
    return caught.value


# Each damage: (function of the dataset dir, the episode it breaks, the file the message names,
# a phrase of the problem).
def missing_video(root):
    os.remove(root / FRONT / "chunk-001/file-000.mp4")


def shorter_video(root):  # chunk-001's file holds 1.4 s, episode 1 needs frames up to 1.7 s
    shutil.copy(root / FRONT / "chunk-001/file-000.mp4", root / FRONT / "chunk-000/file-000.mp4")


def rows_disagree(root):
    def drop_last_row_of_episode_1(columns):
        last = max(i for i, e in enumerate(columns["episode_index"]) if e == 1)
        for values in columns.values():
            del values[last]

    rewrite_rows(root / DATA0, drop_last_row_of_episode_1)


def nan_action(root):
    def poison(columns):
        row = columns["episode_index"].index(2)
        columns["action"][row + 3][1] = float("nan")

    rewrite_rows(root / DATA0, poison)


def unknown_codec(root):
    path = root / FRONT / "chunk-001/file-000.mp4"
    path.write_bytes(path.read_bytes().replace(b"av01", b"zz01"))


DAMAGES = {
    "missing video": (missing_video, [2, 3], f"{FRONT}/chunk-001/file-000.mp4", "missing"),
    "shorter video": (shorter_video, [1], f"{FRONT}/chunk-000/file-000.mp4", "shorter than"),
    "rows disagree": (rows_disagree, [1], DATA0, "metadata says 11 frames but the file has 10"),
    "NaN action": (nan_action, [2], DATA0, "NaN/Inf in 'action' at steps [3] (dims [1])"),
    "unknown codec": (unknown_codec, [2, 3], f"{FRONT}/chunk-001/file-000.mp4", "no decoder"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damage_is_named_or_skipped_and_counted(tmp_path, damage, capsys):
    spoil, episodes, file, phrase = DAMAGES[damage]
    root = copy(tmp_path)
    spoil(root)
    error = refused(root, tmp_path / "out", file, phrase, *(f"episode {e}:" for e in episodes))
    assert f"{len(episodes)} of 4 episode(s) are invalid" in str(error)
    path = convert_lerobot(
        str(root), str(tmp_path / "out"), "robot", skip_bad=True, workers=1, verbose=True
    )
    assert episode_indices(path) == [e for e in range(4) if e not in episodes]
    assert f"SKIPPED {len(episodes)} bad episode(s)" in capsys.readouterr().out


def test_corrupt_parquet_is_named(tmp_path):
    root = copy(tmp_path)
    data = root / DATA0
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    refused(root, tmp_path / "out", DATA0, "not a readable parquet file", "episode 0:")


def test_unsupported_version_is_named(tmp_path):
    root = copy(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta/info.json").write_text(json.dumps(info))
    refused(root, tmp_path / "out", "meta/info.json", "codebase_version 'v1.6' is not supported")


def test_a_video_corrupt_midway_fails_late_without_a_half_written_dataset(tmp_path, capsys):
    """The scan decodes only each video's first frame: damage past it is found while writing.
    The run then fails naming the file and episode, and leaves no dataset; with skip_bad the
    episode is left out and counted."""
    root = copy(tmp_path)
    video = root / FRONT / "chunk-000/file-000.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    refused(root, out, f"{FRONT}/chunk-000/file-000.mp4", "cannot decode", val_fraction=0.0)
    leftovers = [p for p in (out / "robot").rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in leftovers if p.name == "dataset_info.json"]
    path = convert_lerobot(
        str(root), str(out), "robot", skip_bad=True, workers=1, val_fraction=0.0, verbose=True
    )
    kept = episode_indices(path)
    assert 2 in kept and 3 in kept and len(kept) < 4
    assert "SKIPPED" in capsys.readouterr().out


def test_a_killed_conversion_leaves_nothing_a_rerun_takes_for_complete(tmp_path):
    """SIGKILL while the converter writes; the target has no dataset, and a rerun without
    --overwrite converts it whole."""
    root, out = copy(tmp_path), tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "data" / "convert_lerobot.py"),
        f"--source={root}",
        f"--out={out}",
        "--name=robot",
        "--workers=1",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "robot").exists() and any((out / "robot").iterdir()):
            break  # TFDS has started writing into its temporary folder
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "robot" / "1.0.0" / "dataset_info.json").exists()
    path = convert(root, out)
    assert episode_indices(path) == [0, 1, 2, 3]


def test_v21_damage_names_the_episode_file(tmp_path):
    root = copy(tmp_path, "v21_av1")
    os.remove(root / "videos/chunk-000/observation.images.wrist/episode_000002.mp4")
    refused(root, tmp_path / "out", "episode_000002.mp4", "episode 2:", "missing")
    assert np.array_equal(
        episode_indices(convert(root, tmp_path / "out2", skip_bad=True)), [0, 1, 3]
    )


def test_a_missing_decoder_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets without the extra
    with pytest.raises(ImportError, match=r'pip install -e "\.\[lerobot\]"'):
        convert(copy(tmp_path), tmp_path / "out")
    convert(copy(tmp_path, "v30_image"), tmp_path / "out")  # images need no video decoder


def test_decoding_workers_import_neither_tensorflow_nor_jax():
    """The worker processes import `frames` only (TensorFlow there would cost every worker
    seconds and memory, and break MuJoCo in a process that also renders)."""
    video = FIXTURES / "v30_av1" / FRONT / "chunk-000/file-000.mp4"
    code = (
        "import sys; from octo_like.data.lerobot import frames; "
        f"frames.decode_job([('video', 'front', {str(video)!r}, [0.0, 0.1])], True, 1e-4); "
        "print(sorted(m for m in ('tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"

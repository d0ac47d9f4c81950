"""A LeRobot dataset directory as LeRobot writes it (codebase v2.0/v2.1 and v3.0): its metadata,
and where each episode's rows and frames are.

v3.0 (lerobot 0.4 and later)::

    meta/info.json                      codebase_version, fps, features, data_path, video_path
    meta/tasks.parquet                  task_index, task
    meta/episodes/chunk-*/file-*.parquet  per episode: length, tasks, data/{chunk,file}_index,
                                        videos/<key>/{chunk_index, file_index, from_timestamp}
    data/chunk-*/file-*.parquet         rows of many episodes: episode_index, frame_index,
                                        timestamp, task_index, action, observation.state, ...
    videos/<key>/chunk-*/file-*.mp4     many episodes' frames, one after another

v2.x (lerobot 0.3): ``meta/episodes.jsonl`` and ``meta/tasks.jsonl``, and one parquet and one
video per episode (``data/chunk-000/episode_000000.parquet``,
``videos/chunk-000/<key>/episode_000000.mp4``), the chunk being ``episode_index // chunks_size``.

Every problem raises an `EpisodeError` naming the file (and the episode where there is one).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.data.episode_files import EpisodeError

V3_VERSIONS = ("v3.0",)
V2_VERSIONS = ("v2.0", "v2.1")
SUPPORTED_VERSIONS = V2_VERSIONS + V3_VERSIONS
CAMERA_DTYPES = ("video", "image")
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclasses.dataclass(frozen=True)
class Info:
    """``meta/info.json`` of a dataset at `root`."""

    root: str
    version: str
    fps: float
    features: Mapping[str, Any]
    data_path: str
    video_path: str | None
    chunks_size: int
    robot_type: str | None = None

    @property
    def cameras(self) -> list[str]:
        """Feature keys holding frames (``dtype`` video or image), in the file's order."""
        return [k for k, f in self.features.items() if f.get("dtype") in CAMERA_DTYPES]

    def is_video(self, key: str) -> bool:
        return self.features[key].get("dtype") == "video"

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)


@dataclasses.dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives: its data file (and, in v3.0, its rows there) and, per video
    key, its video file and where its frames start in it."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: str  # relative to the root
    videos: Mapping[str, tuple[str, float]]  # video key -> (relative path, from_timestamp)

    @property
    def label(self) -> str:
        return f"episode {self.index}"


def _json(path: str) -> Any:
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError as error:
        raise EpisodeError(path, "is missing: is this a LeRobot dataset directory?") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EpisodeError(path, f"is not valid JSON ({error})") from error


def read_info(root: str) -> Info:
    """Reads and checks ``meta/info.json``; an unsupported version is refused by name."""
    path = os.path.join(root, "meta", "info.json")
    info = _json(path)
    if not isinstance(info, dict):
        raise EpisodeError(path, f"holds {type(info).__name__}, expected an object")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise EpisodeError(
            path,
            f"codebase_version {version!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_VERSIONS)}); convert older datasets with LeRobot's own "
            "converters first (lerobot/datasets/v30/convert_dataset_v21_to_v30.py)",
        )
    missing = [k for k in ("fps", "features", "data_path") if k not in info]
    if missing:
        raise EpisodeError(path, f"misses {missing}")
    fps = info["fps"]
    if not isinstance(fps, int | float) or not np.isfinite(fps) or fps <= 0:
        raise EpisodeError(path, f"fps must be a positive number, got {fps!r}")
    features = info["features"]
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise EpisodeError(path, "features must map each key to {dtype, shape, names}")
    result = Info(
        root=root,
        version=version,
        fps=float(fps),
        features=features,
        data_path=str(info["data_path"]),
        video_path=info.get("video_path"),
        chunks_size=int(info.get("chunks_size") or 1000),
        robot_type=info.get("robot_type"),
    )
    if any(result.is_video(k) for k in result.cameras) and not result.video_path:
        raise EpisodeError(path, "has video features but no video_path")
    return result


def read_tasks(info: Info) -> dict[int, str]:
    """task_index -> task text."""
    if info.version in V3_VERSIONS:
        path = info.path(os.path.join("meta", "tasks.parquet"))
        table = read_parquet(path)
        names = table.column_names
        text = (
            "task" if "task" in names else next((n for n in names if n.startswith("__index")), None)
        )
        if "task_index" not in names or text is None:
            raise EpisodeError(path, f"needs columns task_index and task, has {names}")
        indices, texts = table.column("task_index").to_pylist(), table.column(text).to_pylist()
        return dict(zip(indices, texts, strict=True))
    path = info.path(os.path.join("meta", "tasks.jsonl"))
    return {
        int(row["task_index"]): str(row["task"]) for row in _jsonl(path, ("task_index", "task"))
    }


def _jsonl(path: str, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    try:
        with open(path) as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise EpisodeError(path, f"line {number} is not JSON ({error})") from error
                if not isinstance(row, dict) or any(k not in row for k in keys):
                    raise EpisodeError(path, f"line {number} needs keys {list(keys)}")
                rows.append(row)
    except FileNotFoundError as error:
        raise EpisodeError(path, "is missing") from error
    except (OSError, UnicodeDecodeError) as error:
        raise EpisodeError(path, f"cannot be read ({error})") from error
    return rows


def read_parquet(path: str, columns=None, filters=None):
    """A pyarrow table; a missing or unreadable file is an `EpisodeError` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise EpisodeError(path, "parquet file is missing")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise EpisodeError(path, f"is not a readable parquet file ({error})") from error


def list_episodes(info: Info) -> list[EpisodeRef]:
    """Every episode, in episode_index order."""
    refs = _v3_episodes(info) if info.version in V3_VERSIONS else _v2_episodes(info)
    refs.sort(key=lambda ref: ref.index)
    if not refs:
        raise EpisodeError(info.path("meta"), "lists no episode")
    return refs


def _v3_episodes(info: Info) -> list[EpisodeRef]:
    folder = info.path(os.path.join("meta", "episodes"))
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".parquet")
    )
    if not files:
        raise EpisodeError(folder, "holds no episodes parquet file")
    videos = [k for k in info.cameras if info.is_video(k)]
    refs = []
    for path in files:
        table = read_parquet(path)
        needed = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index"]
        for key in videos:
            needed += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise EpisodeError(path, f"misses columns {missing}")
        rows = table.select(needed).to_pylist()
        for row in rows:
            index = row["episode_index"]
            data_file = info.data_path.format(
                chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
            )
            video_files = {
                key: (
                    info.video_path.format(
                        video_key=key,
                        chunk_index=row[f"videos/{key}/chunk_index"],
                        file_index=row[f"videos/{key}/file_index"],
                    ),
                    float(row[f"videos/{key}/from_timestamp"]),
                )
                for key in videos
            }
            refs.append(
                EpisodeRef(index, row["length"], tuple(row["tasks"] or ()), data_file, video_files)
            )
    return refs


def _v2_episodes(info: Info) -> list[EpisodeRef]:
    path = info.path(os.path.join("meta", "episodes.jsonl"))
    videos = [k for k in info.cameras if info.is_video(k)]
    refs = []
    for row in _jsonl(path, ("episode_index", "length")):
        index = int(row["episode_index"])
        chunk = index // info.chunks_size
        names = {"episode_chunk": chunk, "episode_index": index}
        video_files = {key: (info.video_path.format(video_key=key, **names), 0.0) for key in videos}
        tasks = row.get("tasks") or ()
        refs.append(
            EpisodeRef(
                index, int(row["length"]), tuple(tasks), info.data_path.format(**names), video_files
            )
        )
    return refs

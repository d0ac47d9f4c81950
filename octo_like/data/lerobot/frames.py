"""Frames of a LeRobot dataset's cameras: video decoded at the episode's timestamps with PyAV,
and images stored in the parquet files.

LeRobot picks the frame of step t as the decoded frame whose presentation time is nearest to the
step's query time (its ``timestamp``, plus the episode's ``from_timestamp`` when a v3.0 video
file holds several episodes), and refuses one further than ``tolerance_s`` (1e-4 s by default)
away. This module does the same, so a converted episode holds the frames LeRobot's own loader
returns (up to the decoder's colour conversion, measured in tests/data/test_lerobot_fixture.py).

It imports neither TensorFlow nor JAX: the converter runs it in worker processes, one episode at
a time, on every core.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

DEFAULT_TOLERANCE_S = 1e-4  # LeRobotDataset's tolerance_s
VIDEO_EXTRA = "lerobot"  # pip install -e ".[lerobot]" installs the decoder


class FrameError(Exception):
    """A video or image that cannot give an episode its frames; `path` is the file."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def import_av():
    """PyAV, or an error naming the extra that installs it."""
    try:
        import av
    except ImportError as error:
        raise ImportError(
            'reading LeRobot videos needs PyAV: pip install -e ".[lerobot]" '
            f"(the '{VIDEO_EXTRA}' extra of octo_like; it pins av)"
        ) from error
    return av


def probe_video(path: str) -> dict:
    """``{"codec", "height", "width", "end_s"}`` of a video file's first video stream, after
    decoding its first frame (so a codec the decoder cannot read is found before conversion).
    ``end_s`` is where the last frame's display ends, as the container states it."""
    av = import_av()
    if not os.path.exists(path):
        raise FrameError(path, "video file is missing")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise FrameError(path, "has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise FrameError(
                    path,
                    f"its video codec has no decoder in PyAV {av.__version__}'s FFmpeg (an "
                    "unknown or unsupported codec tag); re-encode it to AV1 or h264",
                )
            codec = stream.codec_context.name
            try:
                first = next(container.decode(stream), None)
            except av.error.FFmpegError as error:
                raise FrameError(path, f"cannot decode its {codec} stream: {error}") from error
            if first is None:
                raise FrameError(path, f"its {codec} stream has no frame")
            end_s = _stream_end(container, stream)
            return {"codec": codec, "height": first.height, "width": first.width, "end_s": end_s}
    except FrameError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise FrameError(
            path, f"cannot open the video ({type(error).__name__}: {error})"
        ) from error


def _stream_end(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        return start + float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6  # av.time_base: microseconds
    return float("inf")


def decode_at(path: str, timestamps: Sequence[float], tolerance_s: float) -> np.ndarray:
    """``uint8[T, h, w, 3]``: for each query time (seconds, ascending), the decoded frame whose
    presentation time is nearest; a frame further than `tolerance_s` is refused by name."""
    av = import_av()
    queries = np.asarray(timestamps, np.float64)
    if queries.ndim != 1 or not len(queries):
        raise FrameError(path, f"needs at least one query time, got shape {queries.shape}")
    first, last = float(queries.min()), float(queries.max())
    times, frames = [], []
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if first > 0:  # to the keyframe at or before the first query
                container.seek(int(max(first - tolerance_s, 0) / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                time = float(frame.pts * stream.time_base) if frame.pts is not None else None
                if time is None or time < first - tolerance_s - 1e-9:
                    continue
                if time > last + tolerance_s:
                    break
                times.append(time)
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as error:
        raise FrameError(path, f"cannot decode ({type(error).__name__}: {error})") from error
    if not frames:
        raise FrameError(
            path, f"no frame between {first:.4f} s and {last:.4f} s (the video is shorter?)"
        )
    times = np.asarray(times)
    nearest = np.abs(queries[:, None] - times[None, :]).argmin(axis=1)
    distance = np.abs(times[nearest] - queries)
    if (far := distance >= tolerance_s).any():
        step = int(np.flatnonzero(far)[0])
        raise FrameError(
            path,
            f"{int(far.sum())} of {len(queries)} frames are missing: the frame for "
            f"{queries[step]:.4f} s is {distance[step]:.4f} s away (tolerance {tolerance_s} s; "
            f"decoded frames span {times[0]:.4f}-{times[-1]:.4f} s). The video is shorter than "
            "its episode or its timestamps disagree with the data",
        )
    return np.stack([frames[i] for i in nearest])


def decode_images(path: str, column: str, cells: Sequence) -> np.ndarray:
    """``uint8[T, h, w, 3]`` from a parquet column of images (``{"bytes", "path"}`` structs,
    PNG or JPEG bytes, as LeRobot's ``dtype: image`` features are stored)."""
    from PIL import Image, UnidentifiedImageError

    frames = []
    for row, cell in enumerate(cells):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            raise FrameError(path, f"'{column}' row {row} holds no image bytes")
        try:
            with Image.open(io.BytesIO(data)) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise FrameError(
                path, f"'{column}' row {row} is not a readable image: {error}"
            ) from error
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise FrameError(path, f"'{column}' images differ in size: {sorted(shapes)}")
    return np.stack(frames)


def decode_job(jobs: Sequence[tuple], by_episode: bool, tolerance_s: float) -> dict:
    """``{feature key: uint8[T, h, w, 3]}`` for one episode: the function worker processes run.

    `jobs`: ``("video", key, path, query times)`` or ``("image", key, parquet path, episode
    index)``; `by_episode`: the parquet file holds several episodes (v3.0), so rows are
    filtered by ``episode_index``.
    """
    out = {}
    for kind, key, path, where in jobs:
        if kind == "video":
            out[key] = decode_at(path, where, tolerance_s)
            continue
        import pyarrow as pa
        import pyarrow.parquet as pq

        filters = [("episode_index", "=", where)] if by_episode else None
        try:
            table = pq.read_table(path, columns=[key, "frame_index"], filters=filters)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise FrameError(path, f"is not a readable parquet file ({error})") from error
        table = table.sort_by("frame_index")
        out[key] = decode_images(path, key, table.column(key).to_pylist())
    return out

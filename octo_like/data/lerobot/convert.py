"""Convert a LeRobot dataset directory (v2.x or v3.0) into an RLDS dataset, as the raw-episode
converter does for episode files: same checks, split, writing, summary and suggested spec.

    path = convert_lerobot("~/lerobot/my_so101", "~/tensorflow_datasets", "my_so101")

What maps to what: each ``video`` or ``image`` feature becomes a camera named by its key without
``observation.images.`` (``observation.images.front`` -> ``front``); ``observation.state`` (or
the float features named in `state_keys`, concatenated) becomes ``observation/state``;
``action`` the action; each frame's task text its ``language_instruction``. ``fps``, the robot
type and each feature's per-dimension ``names`` are kept in the dataset's metadata
(``builder.info.metadata["lerobot"]``).

Two passes, as for episode files: the scan reads every episode's rows and probes every video
(codec, length) so that every bad episode is named before anything is written; the write pass
decodes frames in worker processes, one episode each, on every core.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from octo_like.data.conversion import Scan, check_target, refuse_bad, write_scanned
from octo_like.data.episode_files import EpisodeError, float_array, validate_entries
from octo_like.data.lerobot import frames, layout
from octo_like.data.raw_episodes import STATE_KEY, episode_columns, infer_schema

EPISODE_INDEX_KEY = "episode_index"


def camera_name(key: str) -> str:
    """``observation.images.front`` -> ``front``; other dots become '_'."""
    for prefix in ("observation.images.", "observation.image.", "observation."):
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix) :]
            break
    return key.replace(".", "_").replace("/", "_")


@dataclasses.dataclass
class _Rows:
    """One episode's non-image rows, checked."""

    ref: layout.EpisodeRef
    action: np.ndarray  # float32[T, A]
    state: np.ndarray | None  # float32[T, S]
    instructions: tuple[str, ...]
    timestamps: np.ndarray  # float64[T], as the parquet holds them (float32 widened)


def _column(table, path: str, key: str, label: str) -> np.ndarray:
    column = table.column(key)
    if column.null_count:
        rows = [i for i, v in enumerate(column.to_pylist()) if v is None][:5]
        raise EpisodeError(path, f"{label}: '{key}' is empty (null) at steps {rows}")
    values = column.to_pylist()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise EpisodeError(
            path, f"{label}: '{key}' is not numbers of one length ({error})"
        ) from error


class _DataFiles:
    """The data parquet files, each read once (without image columns) and split by episode."""

    def __init__(self, info: layout.Info, columns: Sequence[str]):
        self.info, self.columns, self.tables = info, list(columns), {}

    def rows(self, ref: layout.EpisodeRef):
        path = self.info.path(ref.data_file)
        if path not in self.tables:
            table = layout.read_parquet(path)
            missing = [c for c in self.columns if c not in table.column_names]
            if missing:
                raise EpisodeError(path, f"misses column(s) {missing}; it has {table.column_names}")
            self.tables[path] = table.select(self.columns)
        table = self.tables[path]
        if self.info.version in layout.V3_VERSIONS:
            import pyarrow.compute as pc

            table = table.filter(pc.equal(table.column(EPISODE_INDEX_KEY), ref.index))
        return path, table.sort_by("frame_index")


def _episode_rows(
    files: _DataFiles, ref: layout.EpisodeRef, tasks: dict, state_keys, action_key
) -> _Rows:
    path, table = files.rows(ref)
    label = ref.label
    if table.num_rows != ref.length:
        raise EpisodeError(
            path,
            f"{label}: the metadata says {ref.length} frames but the file has "
            f"{table.num_rows} rows",
        )
    frame_index = np.asarray(table.column("frame_index").to_pylist())
    if not np.array_equal(frame_index, np.arange(ref.length)):
        raise EpisodeError(path, f"{label}: frame_index is not 0..{ref.length - 1}")
    timestamps = _column(table, path, "timestamp", label)
    if not np.isfinite(timestamps).all() or (np.diff(timestamps) <= 0).any():
        raise EpisodeError(path, f"{label}: timestamps are not finite and increasing")
    task_index = np.asarray(table.column("task_index").to_pylist())
    unknown = sorted(set(task_index.tolist()) - set(tasks))
    if unknown:
        raise EpisodeError(path, f"{label}: task_index {unknown} not in the dataset's tasks")
    try:
        action = float_array(path, action_key, _column(table, path, action_key, label), rank=2)
        state = None
        if state_keys:
            parts = [_column(table, path, key, label) for key in state_keys]
            parts = [p[:, None] if p.ndim == 1 else p for p in parts]
            state = float_array(path, "+".join(state_keys), np.concatenate(parts, axis=1), rank=2)
    except EpisodeError as error:
        raise EpisodeError(path, f"{label}: {error.problem}") from error
    instructions = tuple(str(tasks[i]) for i in task_index.tolist())
    return _Rows(ref, action, state, instructions, timestamps)


def _check_videos(info, rows: _Rows, probes: dict, tolerance_s: float) -> dict[str, tuple]:
    """Probes each video file once; checks it covers the episode. Returns key -> (h, w)."""
    shapes = {}
    for key, (relative, start) in rows.ref.videos.items():
        path = info.path(relative)
        if path not in probes:
            try:
                probes[path] = frames.probe_video(path)
            except frames.FrameError as error:
                probes[path] = error
        probe = probes[path]
        if isinstance(probe, frames.FrameError):
            raise EpisodeError(path, f"{rows.ref.label}: {probe.problem}")
        needed = start + float(rows.timestamps[-1])
        if needed + 0.5 / info.fps > probe["end_s"] + tolerance_s:
            raise EpisodeError(
                path,
                f"{rows.ref.label}: the video ends at {probe['end_s']:.4f} s but the episode "
                f"needs a frame at {needed:.4f} s (the video is shorter than its episode)",
            )
        shapes[key] = (probe["height"], probe["width"])
    return shapes


def _image_jobs(info, rows: _Rows) -> list:
    keys = [k for k in info.cameras if not info.is_video(k)]
    return [("image", k, info.path(rows.ref.data_file), rows.ref.index) for k in keys]


def _video_jobs(info, rows: _Rows) -> list:
    return [
        ("video", key, info.path(relative), (start + rows.timestamps).tolist())
        for key, (relative, start) in rows.ref.videos.items()
    ]


def convert_lerobot(
    source_dir: str,
    out_dir: str,
    name: str,
    *,
    state_keys: Sequence[str] | None = None,
    action_key: str = "action",
    val_fraction: float = 0.1,
    image_encoding: str = "jpeg",
    version: str = "1.0.0",
    skip_bad: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    tolerance_s: float = frames.DEFAULT_TOLERANCE_S,
    workers: int | None = None,
    verbose: bool = True,
) -> str:
    """Converts every episode of a LeRobot dataset; returns ``out_dir/name/version``.

    `state_keys`: float features forming the proprio (default ``observation.state`` when the
    dataset has it); `tolerance_s`: how far a decoded frame may lie from its step's time
    (LeRobot's default); `workers`: decoding processes (default: one per core).
    """
    source_dir, out_dir = os.path.expanduser(source_dir), os.path.expanduser(out_dir)
    check_target(out_dir, name, version, overwrite)
    info = layout.read_info(source_dir)
    if any(info.is_video(k) for k in info.cameras):
        frames.import_av()  # a missing decoder is named before the scan
    state_keys = _state_keys(info, state_keys, action_key)
    refs = layout.list_episodes(info)
    tasks = layout.read_tasks(info)
    scan, rows = _scan(info, refs, tasks, state_keys, action_key, image_encoding, tolerance_s)
    refuse_bad(scan, source_dir, len(refs), skip_bad, "episode(s)")
    cameras = {key: camera_name(key) for key in info.cameras}

    def episodes(labels: list[str]) -> Iterator[dict]:
        for label, decoded in _decode_in_order(
            info, [rows[x] for x in labels], tolerance_s, workers
        ):
            if isinstance(decoded, EpisodeError):
                if not skip_bad:
                    raise decoded
                scan.bad[label] = decoded.problem
                continue
            yield _columns(rows[label], decoded, cameras, scan)

    return write_scanned(
        scan,
        out_dir,
        name,
        episodes,
        source=source_dir,
        val_fraction=val_fraction,
        seed=seed,
        version=version,
        overwrite=overwrite,
        description=f"Converted by octo_like.data.lerobot from {source_dir}",
        metadata={"lerobot": _metadata(info, state_keys, action_key, cameras)},
        verbose=verbose,
    )


def _state_keys(info: layout.Info, state_keys, action_key: str) -> list[str]:
    features = info.features
    if action_key not in features:
        raise EpisodeError(
            info.path("meta/info.json"), f"has no '{action_key}' feature (has {list(features)})"
        )
    if state_keys is None:
        return ["observation.state"] if "observation.state" in features else []
    unknown = [k for k in state_keys if k not in features]
    if unknown:
        raise EpisodeError(
            info.path("meta/info.json"),
            f"state key(s) {unknown} are not features (has {list(features)})",
        )
    return list(state_keys)


def _scan(info, refs, tasks, state_keys, action_key, image_encoding, tolerance_s):
    columns = ["frame_index", "timestamp", "task_index", action_key, *state_keys]
    if info.version in layout.V3_VERSIONS:
        columns.append(EPISODE_INDEX_KEY)
    files, probes, scan, rows = _DataFiles(info, columns), {}, Scan(), {}
    shapes_seen: dict[str, tuple] = {}
    for ref in refs:
        try:
            episode = _episode_rows(files, ref, tasks, state_keys, action_key)
            shapes = _check_videos(info, episode, probes, tolerance_s)
            for key, shape in shapes.items():
                if shapes_seen.setdefault(key, shape) != shape:
                    raise EpisodeError(
                        info.path(ref.videos[key][0]),
                        f"{ref.label}: '{key}' frames are {shape}, other episodes' "
                        f"{shapes_seen[key]}",
                    )
        except EpisodeError as error:
            scan.bad[ref.label] = error.args[0]
            continue
        rows[ref.label] = episode
        scan.lengths[ref.label] = ref.length
        scan.actions.append(episode.action)
        scan.instructions.update(episode.instructions)
        if scan.schema is None:
            scan.schema = _schema(info, episode, shapes, image_encoding)
            scan.first = ref.label
            scan.cameras = [camera_name(k) for k in info.cameras]
            scan.has_state = episode.state is not None
    scan.notes.append(f"LeRobot {info.version} at {info.fps:g} fps ({len(refs)} episodes)")
    return scan, rows


def _schema(info, episode: _Rows, shapes: dict, image_encoding: str):
    """The RLDS schema, from one episode's shapes (image features: their first frames)."""
    decoded = {}
    for kind, key, path, where in _image_jobs(info, episode):
        decoded[key] = frames.decode_job([(kind, key, path, where)], _by_episode(info), 0.0)[key][
            :1
        ]
    images = {camera_name(k): np.zeros((1, *shapes[k], 3), np.uint8) for k in shapes}
    images.update({camera_name(k): v for k, v in decoded.items()})
    entries = {f"images/{c}": v for c, v in images.items()}
    entries.update(action=episode.action[:1], instruction=episode.instructions[0])
    if episode.state is not None:
        entries["state"] = episode.state[:1]
    schema = infer_schema(validate_entries(info.root, entries, ()), image_encoding)
    schema.episode_metadata[EPISODE_INDEX_KEY] = _int_feature()
    return schema


def _int_feature():
    from octo_like.data.rlds_writer import scalar

    return scalar("int64")


def _decode_in_order(info, episodes: list[_Rows], tolerance_s, workers) -> Iterator:
    """(label, {key: frames} or EpisodeError) per episode, in order; decoding runs ahead in
    `workers` spawned processes (spawned: they never import TensorFlow)."""
    workers = workers or os.cpu_count() or 1
    jobs = [_video_jobs(info, e) + _image_jobs(info, e) for e in episodes]
    if workers <= 1 or len(episodes) <= 1:
        for episode, job in zip(episodes, jobs, strict=False):
            decode = functools.partial(frames.decode_job, job, _by_episode(info), tolerance_s)
            yield episode.ref.label, _named(episode, decode)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        ahead = 2 * workers  # bounded: frames of a few episodes in memory at a time
        futures = [
            pool.submit(frames.decode_job, j, _by_episode(info), tolerance_s) for j in jobs[:ahead]
        ]
        for i, episode in enumerate(episodes):
            if i + ahead < len(jobs):
                futures.append(
                    pool.submit(frames.decode_job, jobs[i + ahead], _by_episode(info), tolerance_s)
                )
            yield episode.ref.label, _named(episode, futures[i].result)
            futures[i] = None


def _named(episode: _Rows, decode: Callable[[], dict]) -> dict | EpisodeError:
    """`decode()`'s frames, or its failure as an EpisodeError naming the episode and file."""
    try:
        return decode()
    except frames.FrameError as error:
        return EpisodeError(error.path, f"{episode.ref.label}: {error.problem}")
    except EpisodeError as error:
        return error


def decoding_jobs(source_dir: str, tolerance_s: float = frames.DEFAULT_TOLERANCE_S):
    """``(by_episode, [jobs of each good episode])``: the decoding a conversion of `source_dir`
    runs, for `frames.decode_job` (scripts/benchmark_lerobot_conversion.py times it alone)."""
    info = layout.read_info(source_dir)
    state_keys = _state_keys(info, None, "action")
    refs, tasks = layout.list_episodes(info), layout.read_tasks(info)
    scan, rows = _scan(info, refs, tasks, state_keys, "action", "jpeg", tolerance_s)
    jobs = [_video_jobs(info, rows[x]) + _image_jobs(info, rows[x]) for x in scan.good]
    return _by_episode(info), jobs


def _by_episode(info: layout.Info) -> bool:
    return info.version in layout.V3_VERSIONS


def _columns(episode: _Rows, decoded: dict, cameras: dict, scan: Scan) -> dict:
    entries = {f"images/{cameras[k]}": v for k, v in decoded.items()}
    entries.update(action=episode.action, instruction=np.asarray(episode.instructions))
    if episode.state is not None:
        entries[STATE_KEY] = episode.state
    raw = validate_entries(episode.ref.data_file, entries, ())
    columns = episode_columns(raw, scan.schema, episode.ref.data_file)
    columns["episode_metadata"][EPISODE_INDEX_KEY] = episode.ref.index
    return columns


def _metadata(info: layout.Info, state_keys, action_key, cameras) -> dict:
    names = {key: info.features[key].get("names") for key in [action_key, *state_keys]}
    return {
        "codebase_version": info.version,
        "fps": info.fps,
        "robot_type": info.robot_type,
        "action_key": action_key,
        "state_keys": list(state_keys),
        "cameras": cameras,
        "names": names,
    }

"""Convert a folder of raw episode files (one ``.npz`` / ``.hdf5`` per episode) into an RLDS
dataset in TFDS format, and suggest the `DatasetSpec` that registers it for training.

    path = convert_episodes("~/recordings", "~/tensorflow_datasets", "my_robot")
    spec = suggest_dataset_spec_for(path)      # a dict for config.data.extra_specs["my_robot"]

The file layout is documented (and read strictly) in `octo_like.data.episode_files`. The RLDS
written here mirrors it: ``steps/observation/<camera>`` (encoded images),
``steps/observation/state``, ``steps/action``, ``steps/language_instruction``, the RLDS flags, and
``episode_metadata/file_path`` (plus ``success`` when the files have it). The feature shapes come
from the first valid episode; every other episode must match them.

Images are stored as JPEG by default, like the Open X-Embodiment datasets: about ten times smaller
than PNG and faster to decode, at the cost of a few grey levels of compression noise (the model is
trained on such data anyway). Choose ``image_encoding="png"`` for a bit-exact copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from octo_like.data.conversion import (  # noqa: F401  (spec_json re-exported)
    Scan,
    check_target,
    refuse_bad,
    spec_json,
    split_episodes,
    write_scanned,
)
from octo_like.data.episode_files import (  # noqa: F401  (re-exported: one import for users)
    EpisodeError,
    RawEpisode,
    list_episode_files,
    read_episode,
    write_episode_file,
)
from octo_like.data.rlds_writer import (
    Feature,
    RldsSchema,
    complete_step_columns,
    image,
    scalar,
    step_rows,
    tensor,
    text,
)

IMAGE_ENCODINGS = ("jpeg", "png")
STATE_KEY = "state"
FILE_PATH_KEY = "file_path"
SUCCESS_KEY = "success"
_WRIST_HINT = re.compile(r"wrist|hand|gripper|eye|ee_cam|tcp", re.IGNORECASE)


# ------------------------------------------------------------------------------- schema
def infer_schema(episode: RawEpisode, image_encoding: str = "jpeg") -> RldsSchema:
    """The RLDS features of a dataset whose episodes look like `episode`."""
    if image_encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"image_encoding must be one of {IMAGE_ENCODINGS}, got {image_encoding!r}")
    observation: dict[str, Feature] = {
        camera: image(*frames.shape[1:3], encoding=image_encoding)
        for camera, frames in episode.images.items()
    }
    if episode.state is not None:
        observation[STATE_KEY] = tensor(episode.state.shape[1:])
    metadata = {FILE_PATH_KEY: text()}
    if episode.success is not None:
        metadata[SUCCESS_KEY] = scalar("bool")
    return RldsSchema(
        observation=observation,
        step={"action": tensor(episode.action.shape[1:]), "language_instruction": text()},
        episode_metadata=metadata,
    )


def _describe(schema: RldsSchema) -> dict[str, Any]:
    """Comparable summary of what an episode must provide to fit `schema`."""
    return {
        "cameras": {k: list(f.shape) for k, f in schema.observation.items() if f.kind == "image"},
        STATE_KEY: list(schema.observation[STATE_KEY].shape)
        if STATE_KEY in schema.observation
        else None,
        "action": list(schema.step["action"].shape),
        SUCCESS_KEY: SUCCESS_KEY in schema.episode_metadata,
    }


def check_matches_schema(
    episode: RawEpisode, schema: RldsSchema, reference: str = "the dataset's features"
) -> None:
    """Raises EpisodeError listing how `episode` differs from `schema` (described in the
    message as `reference`, e.g. the file it was inferred from)."""
    expected = _describe(schema)
    found = _describe(infer_schema(episode))
    differences = [
        f"{key} is {found[key]} in this file but {expected[key]} in {reference}"
        for key in expected
        if found[key] != expected[key]
    ]
    if differences:
        raise EpisodeError(
            episode.path,
            "does not match the dataset's layout: " + "; ".join(differences),
        )


def episode_columns(episode: RawEpisode, schema: RldsSchema, file_path: str = "") -> dict:
    """`episode` as the column dict `write_episodes` takes (see `rlds_writer`)."""
    length = episode.length
    observation = {camera: episode.images[camera] for camera in episode.images}
    if STATE_KEY in schema.observation:
        observation[STATE_KEY] = episode.state
    steps: dict[str, Any] = {
        "observation": observation,
        "action": episode.action,
        "language_instruction": list(episode.instructions),
    }
    if episode.is_terminal is not None:
        steps["is_terminal"] = episode.is_terminal
    if episode.reward is not None:
        steps["reward"] = episode.reward
    elif episode.success is False:  # a failed episode earns nothing, not the default 1 at the end
        steps["reward"] = np.zeros(length, np.float32)
    complete_step_columns(steps, length)
    metadata: dict[str, Any] = {FILE_PATH_KEY: file_path or episode.path}
    if SUCCESS_KEY in schema.episode_metadata:
        metadata[SUCCESS_KEY] = bool(episode.success)
    return {"steps": steps, "episode_metadata": metadata}


def episode_example(episode: RawEpisode, schema: RldsSchema, file_path: str = "") -> dict:
    """`episode` as one TFDS example (steps as rows), for hand-written builders."""
    columns = episode_columns(episode, schema, file_path)
    return {
        "steps": step_rows(columns["steps"], episode.length),
        "episode_metadata": columns["episode_metadata"],
    }


# ------------------------------------------------------------------------------- conversion
split_episode_files = split_episodes  # the name data/my_robot's builder template uses


def _scan(files: Sequence[str], image_encoding: str) -> Scan:
    scan = Scan(unit="file(s)")
    for path in files:
        try:
            episode = read_episode(path)
            if scan.schema is None:
                scan.schema, scan.first = infer_schema(episode, image_encoding), path
                scan.cameras, scan.has_state = list(episode.images), episode.state is not None
                scan.ignored_keys = episode.ignored_keys
            else:
                check_matches_schema(episode, scan.schema, f"{scan.first} (the first)")
        except EpisodeError as error:
            scan.bad[path] = error.problem
            continue
        scan.lengths[path] = episode.length
        scan.actions.append(episode.action)
        scan.instructions.update(episode.instructions)
    return scan


def convert_episodes(
    source_dir: str,
    out_dir: str,
    name: str,
    *,
    val_fraction: float = 0.1,
    image_encoding: str = "jpeg",
    version: str = "1.0.0",
    skip_bad: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    verbose: bool = True,
) -> str:
    """Converts every episode file under `source_dir`; returns ``out_dir/name/version``.

    Two passes: every file is read and validated first (so a bad file fails the conversion
    before anything is written, and the error lists *all* bad files), then the good ones are
    split into train / val with `seed` and written. With `skip_bad`, bad files are left out
    with a warning naming each one. An existing dataset is refused unless `overwrite`.
    `verbose` prints a summary and the suggested `DatasetSpec`.
    """
    source_dir, out_dir = os.path.expanduser(source_dir), os.path.expanduser(out_dir)
    check_target(out_dir, name, version, overwrite)
    files = list_episode_files(source_dir)
    scan = _scan(files, image_encoding)
    refuse_bad(scan, source_dir, len(files), skip_bad, "episode file(s)")
    schema = scan.schema

    def episodes(paths: list[str]):
        for path in paths:
            yield episode_columns(read_episode(path), schema, os.path.relpath(path, source_dir))

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
        description=f"Converted by octo_like.data.raw_episodes from {source_dir}",
        verbose=verbose,
    )


# ------------------------------------------------------------------------------- spec
def canonical_cameras(cameras: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
    """Maps dataset cameras onto ``primary`` / ``secondary`` / ``wrist``; also returns the
    cameras left over.

    Exact canonical names win; then a name that looks like a wrist camera (wrist, hand,
    gripper, eye...) becomes ``wrist``; the others fill ``primary`` then ``secondary`` in order.
    """
    mapping: dict[str, str | None] = {"primary": None, "secondary": None, "wrist": None}
    rest = []
    for camera in cameras:
        if camera in mapping and mapping[camera] is None:
            mapping[camera] = camera
        else:
            rest.append(camera)
    left = []
    for camera in rest:
        if _WRIST_HINT.search(camera) and mapping["wrist"] is None:
            mapping["wrist"] = camera
        else:
            left.append(camera)
    unused = []
    for camera in left:
        slot = next((s for s in ("primary", "secondary") if mapping[s] is None), None)
        if slot is None:
            unused.append(camera)
        else:
            mapping[slot] = camera
    return mapping, unused


def binary_dims(actions: np.ndarray) -> list[bool]:
    """Per dim of ``actions float[N, A]``: True where it takes exactly two values (a gripper
    command); such dims are left unnormalized so the target stays e.g. {0, 1}."""
    actions = np.asarray(actions)
    return [len(np.unique(actions[:, d])) == 2 for d in range(actions.shape[1])]


def suggest_dataset_spec(
    name: str, cameras: Sequence[str], *, has_state: bool, actions: np.ndarray
) -> dict[str, Any]:
    """A `DatasetSpec.to_dict()`-style dict for a converted dataset (edit before use).

    `actions float[N, A]`: (a sample of) the dataset's actions. The encoding is ``eef_pos``
    only for 7 dims ending in a binary gripper (xyz, rpy, gripper: check the units and that
    1 = open), otherwise ``custom``; binary dims are left out of normalization.
    """
    from octo_like.data.oxe.spec import ActionEncoding

    image_keys, _ = canonical_cameras(list(cameras))
    binary = binary_dims(actions)
    gripper_last = bool(binary) and binary[-1] and set(np.unique(actions[:, -1])) <= {0.0, 1.0}
    encoding = (
        ActionEncoding.EEF_POS if len(binary) == 7 and gripper_last else ActionEncoding.CUSTOM
    )
    return {
        "name": name,
        "image_keys": image_keys,
        "proprio_key": STATE_KEY if has_state else None,
        "language_key": "language_instruction",
        "action_encoding": encoding.value,
        "action_normalization_mask": [not b for b in binary],
        "standardize": "identity",
    }


def suggest_dataset_spec_for(
    dataset_dir: str, name: str | None = None, *, max_episodes: int = 200
) -> dict[str, Any]:
    """`suggest_dataset_spec` for a converted dataset directory (``.../name/version``), from
    its features and the actions of up to `max_episodes` train episodes."""
    from octo_like.data import builder_dir, rlds

    builder = builder_dir.open_builder(dataset_dir)
    steps = builder.info.features["steps"]
    observation = steps["observation"]
    cameras = [k for k, f in observation.items() if f.__class__.__name__ == "Image"]
    episodes = rlds.read_episodes(builder, "train", shuffle_files=False)
    actions = [e["action"] for e in episodes.take(max_episodes).as_numpy_iterator()]
    return suggest_dataset_spec(
        name or builder.info.name,
        cameras,
        has_state=STATE_KEY in observation,
        actions=np.concatenate(actions),
    )

"""Does a policy reproduce its own training data? One recorded episode replayed, frame by frame.

    python scripts/replay_episode.py --checkpoint runs/my_robot/checkpoints \
        --data_dir /data/my_robot/1.0.0 --episode 0 --out replay.png

The last check of the list for a fine-tuned policy that hovers or acts at random. One episode is
read as training reads it (this project's RLDS reader, the dataset's spec and standardization,
the checkpoint's cameras decoded and resized as evaluation-time training frames, raw proprio),
then fed to the `Policy` the way a robot feeds it: `reset` with the episode's instruction,
`step` with each recorded frame (the policy keeps the history, normalizes proprio and
unnormalizes actions with the checkpoint's statistics of this dataset). The actions it executes
(receding horizon by default: the first `exec_horizon` actions of each chunk, the whole chunk
unless told) are compared with the recorded actions at the same steps, in the dataset's units
(`replay_report.score`).

Open loop: the policy always sees the recorded observations, never the consequences of its own
actions, so matching here is necessary for closed-loop success, not sufficient. A policy that
does not match its own training data points at the wiring (statistics, instruction, camera or
proprio keys) or at training itself.

Bad input is a `ReplayError` (a ValueError): one line naming the dataset, episode or field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.schema import PROPRIO, image_key

DEFAULT_SPLIT = "train"


class ReplayError(ValueError):
    """A replay the inputs do not allow (episode out of range, another action dim, a missing
    field...): the message is one line naming the dataset, episode or field."""


@dataclasses.dataclass(frozen=True)
class Episode:
    """One standardized episode, in the layout a robot sends (per step: images, raw proprio)."""

    dataset: str
    split: str
    index: int
    episode_id: str
    instruction: str
    images: Mapping[str, np.ndarray]  # camera -> uint8[T, h, w, 3], the model's cameras it has
    proprio: np.ndarray | None  # float32[T, P] (raw); None: the dataset has none
    actions: np.ndarray  # float32[T, A], standardized: the dataset's units
    encoding: str  # the spec's action encoding (``eef_pos``, ``custom``...)
    missing_cameras: tuple[str, ...] = ()  # the model's cameras the dataset lacks (masked)

    @property
    def where(self) -> str:
        return f"dataset {self.dataset!r} {self.split} episode {self.index}"

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """Step `t` as `Policy.step` takes it."""
        frame = {image_key(camera): images[t] for camera, images in self.images.items()}
        if self.proprio is not None:
            frame[PROPRIO] = self.proprio[t]
        return frame


@dataclasses.dataclass(frozen=True)
class Replay:
    """What the policy executed at each step of the episode."""

    predicted: np.ndarray  # float32[T, A], robot units
    chunk_starts: tuple[int, ...]  # steps at which a new chunk was predicted
    conditioning: str  # "language", "goal" (the episode's last frame) or "none"


# ---------------------------------------------------------------------------- the dataset
def dataset_spec(name: str, spec_path: str | None = None):
    """The registry's spec of `name`, or the `DatasetSpec` JSON at `spec_path` (as
    scripts/inspect_batch.py --spec and data/convert_raw_episodes.py --spec_out write it)."""
    from octo_like.data.oxe.registry import get_dataset_spec
    from octo_like.data.oxe.spec import DatasetSpec

    extra = {}
    if spec_path:
        try:
            with open(spec_path) as file:
                spec = DatasetSpec.from_dict(json.load(file))
        except (OSError, ValueError, TypeError) as error:
            raise ReplayError(f"--spec {spec_path}: {' '.join(str(error).split())}") from None
        if spec.name != name:
            raise ReplayError(
                f"--spec {spec_path} describes dataset {spec.name!r}, not {name!r} (pass "
                f"--dataset {spec.name} or a spec of {name!r})"
            )
        extra[name] = spec
    try:
        return get_dataset_spec(name, extra)
    except ValueError as error:  # UnknownNameError: lists close names
        raise ReplayError(
            f"{error}; a dataset outside the registry needs --spec (a DatasetSpec JSON)"
        ) from None


def open_dataset(data_dir: str, name: str | None = None):
    """(TFDS builder, dataset name): `data_dir` a prepared directory or a root holding `name`."""
    from octo_like.data import builder_dir

    try:
        if name is None:
            builder = builder_dir.open_builder(data_dir)
            return builder, builder.info.name
        return builder_dir.open_source(data_dir, name), name
    except (OSError, ValueError) as error:  # FileNotFoundError, DatasetMetadataError
        raise ReplayError(f"--data_dir {data_dir}: {' '.join(str(error).split())}") from None


def check_episode_index(builder, name: str, split: str, episode: int) -> int:
    """The number of episodes of `split`; a ReplayError when `episode` is not one of them."""
    from octo_like.data.splits import split_names

    try:
        split_names(builder, split)
    except ValueError as error:
        raise ReplayError(str(error)) from None
    if split not in builder.info.splits:  # "train[:90%]", "train+val": no single numbering
        raise ReplayError(
            f"dataset {name!r}: --split {split!r} is not a split name (e.g. "
            f"{sorted(builder.info.splits)[0]!r}); --episode counts within one split"
        )
    count = int(builder.info.splits[split].num_examples)
    if not 0 <= episode < count:
        raise ReplayError(
            f"dataset {name!r} {split} has {count} episodes (0..{count - 1}): episode {episode} "
            "is out of range"
        )
    return count


def read_episode(
    builder,
    spec,
    split: str,
    index: int,
    cameras: Mapping[str, tuple[int, int] | None],
    *,
    proprio: bool = True,
) -> Episode:
    """Episode `index` of `split`, read and standardized as training reads it (the same reader,
    standardization and checks), images decoded and resized as evaluation-time training frames.

    `cameras`: the model's cameras with the size to decode them at (None: the dataset's own
    size). A camera the spec does not map is left out (training feeds it as a masked empty
    image; the policy masks a camera it is not sent) and listed in `missing_cameras`.
    """
    import tensorflow as tf

    from octo_like import schema
    from octo_like.data import raw_checks
    from octo_like.data.dataset import Parallelism
    from octo_like.data.frame_transforms import CameraTransform, transform_frame
    from octo_like.data.prepare import standardized_trajectories
    from octo_like.data.validation import data_errors

    where = f"dataset {spec.name!r} {split} episode {index}"
    present = [c for c in cameras if spec.image_keys.get(c)]
    if not present:
        raise ReplayError(
            f"{where}: the dataset's spec maps none of the model's cameras {sorted(cameras)} "
            f"(it has {sorted(spec.cameras)})"
        )
    raw_sizes = raw_checks.expected_image_shapes(builder, spec, present)
    sizes = {}
    for camera in present:
        size = cameras[camera] or raw_sizes.get(spec.image_keys[camera])
        if size is None:  # images of varying size: no one size to decode at
            raise ReplayError(f"{where}: camera {camera!r} has no fixed image size to decode at")
        sizes[camera] = CameraTransform(size=tuple(int(s) for s in size))

    def decode(traj: dict) -> dict:
        observation = traj["observation"]
        frame = {"observation": {image_key(c): observation[image_key(c)] for c in sizes}}
        images = transform_frame(frame, None, sizes, train=False)["observation"]
        return {
            "images": images,
            schema.PROPRIO: observation[schema.PROPRIO],
            schema.ACTION: traj[schema.ACTION],
            schema.LANGUAGE: traj["task"][schema.LANGUAGE],
            schema.EPISODE_ID: traj[schema.EPISODE_ID],
        }

    one = Parallelism(read=1, trajectory=1, frame=1, ram_budget_gb=None)
    locate = lambda: raw_checks.describe_undecodable([(builder, spec, split)], tuple(sizes))  # noqa: E731
    try:
        with data_errors(locate):
            trajectories = standardized_trajectories(
                builder, spec, f"{split}[{index}:{index + 1}]", tuple(present), parallelism=one
            )
            read = trajectories.map(decode).dataset.take(1)
            found = list(read.as_numpy_iterator())
    except (ValueError, tf.errors.OpError) as error:  # DataError, StandardizationError...
        text = " ".join(str(getattr(error, "message", None) or error).split())
        raise ReplayError(f"{where}: {text}") from None
    if not found:
        raise ReplayError(f"{where}: the reader returned no episode")
    traj = found[0]
    actions = np.asarray(traj[schema.ACTION], np.float32)
    if actions.shape[0] == 0:
        raise ReplayError(f"{where}: the episode has no steps")
    values = np.asarray(traj[schema.PROPRIO], np.float32)
    language = traj[schema.LANGUAGE]
    return Episode(
        dataset=spec.name,
        split=split,
        index=index,
        episode_id=traj[schema.EPISODE_ID].decode(errors="replace"),
        instruction=language[0].decode(errors="replace") if len(language) else "",
        images={camera: traj["images"][image_key(camera)] for camera in sizes},
        proprio=values if proprio and spec.proprio_key is not None else None,
        actions=actions,
        encoding=spec.action_encoding.value,
        missing_cameras=tuple(c for c in cameras if c not in sizes),
    )


# ---------------------------------------------------------------------------- the policy
def decode_sizes(policy) -> dict[str, tuple[int, int] | None]:
    """The model's cameras with the size training fed them (``frame_resize`` "linear": the
    training pipeline's resize to the model's size); None (the dataset's own size) for a
    model that resizes robot frames itself its own way (an imported Octo's "lanczos3")."""
    resize_here = policy.config.frame_resize == "linear"
    return {
        camera: tuple(size) if resize_here else None
        for camera, size in policy.metadata()["cameras"].items()
    }


def check_episode(policy, episode: Episode) -> None:
    """The episode has what the model reads, at the model's widths (else a ReplayError)."""
    where = episode.where
    if episode.actions.shape[-1] != policy.action_dim:
        raise ReplayError(
            f"{where}: action has {episode.actions.shape[-1]} dims, the policy predicts "
            f"{policy.action_dim} (statistics of {policy.dataset_name!r}): is it the dataset "
            "the checkpoint was trained on?"
        )
    if policy.proprio_dim is not None:
        if episode.proprio is None:
            raise ReplayError(
                f"{where}: no proprio (its spec names no proprio_key); the model reads "
                f"{policy.proprio_dim}-dim proprio"
            )
        if episode.proprio.shape[-1] != policy.proprio_dim:
            raise ReplayError(
                f"{where}: proprio has {episode.proprio.shape[-1]} dims, the model reads "
                f"{policy.proprio_dim}"
            )


def task_of(policy, episode: Episode) -> tuple[str | None, dict | None, str]:
    """(instruction, goal images, conditioning): the episode's instruction for a language
    model; for a goal-image model without language, the episode's last frame as the goal (the
    finished task, as goal relabeling trained it); else unconditioned."""
    metadata = policy.metadata()
    if metadata["language"] and episode.instruction:
        return episode.instruction, None, "language"
    goals = {c: episode.images[c][-1] for c in metadata["goal_cameras"] if c in episode.images}
    if goals and not metadata["language"]:
        return None, goals, "goal"
    return None, None, "none"


def replay(policy, episode: Episode) -> Replay:
    """Steps a fresh session of `policy` through `episode`; the action executed at each step."""
    session = policy.new_session()
    instruction, goal, conditioning = task_of(policy, episode)
    session.reset(instruction=instruction, goal=goal)
    actions, starts = [], []
    for t in range(episode.length):
        if session.executor.needs_chunk():
            starts.append(t)
        try:
            actions.append(session.step(episode.frame(t)))
        except ValueError as error:  # e.g. proprio far outside the checkpoint's statistics
            raise ReplayError(f"{episode.where} step {t}: {' '.join(str(error).split())}") from None
    return Replay(np.stack(actions).astype(np.float32), tuple(starts), conditioning)


def action_mean(policy) -> np.ndarray:
    """The mean action of the policy's statistics (the dataset's units): the hover point."""
    from octo_like.normalization import ArrayStatistics

    entry = policy.model.dataset_statistics[policy.dataset_name]
    return ArrayStatistics.from_dict(entry["statistics"]["action"]).mean


def load_policy(checkpoint: str, dataset: str, **options):
    """`Policy.from_checkpoint` with the statistics of `dataset` (or `options`'
    ``dataset_name``): actions come back in that dataset's units."""
    from octo_like.inference.policy import Policy

    chosen = options.pop("dataset_name", None)
    try:
        policy = Policy.from_checkpoint(checkpoint, dataset_name=chosen or dataset, **options)
    except (OSError, ValueError) as error:
        hint = ""
        if chosen is None and "not in the checkpoint's statistics" in str(error):
            hint = (
                " (the dataset replayed): pass --dataset_name to pick whose statistics map "
                "the policy's actions to robot units"
            )
        raise ReplayError(
            f"--checkpoint {checkpoint}: {' '.join(str(error).split())}{hint}"
        ) from None
    return policy


# ---------------------------------------------------------------------------- the whole check
def replay_episode(
    checkpoint: str,
    data_dir: str,
    *,
    dataset: str | None = None,
    spec: str | None = None,
    split: str = DEFAULT_SPLIT,
    episode: int = 0,
    out: str | None = None,
    **policy_options: Any,
) -> dict[str, Any]:
    """scripts/replay_episode.py's check: the report (`replay_report.report`), the plot at
    `out` when given. `policy_options`: `Policy.from_checkpoint`'s (step, dataset_name,
    execution, exec_horizon, ensemble_decay, seed). The episode index is checked before the
    checkpoint loads."""
    from octo_like.inference import replay_report

    builder, name = open_dataset(data_dir, dataset)
    data_spec = dataset_spec(name, spec)
    check_episode_index(builder, name, split, episode)
    policy = load_policy(checkpoint, name, **policy_options)
    recorded = read_episode(
        builder, data_spec, split, episode, decode_sizes(policy),
        proprio=policy.proprio_dim is not None,
    )  # fmt: skip
    check_episode(policy, recorded)
    replayed = replay(policy, recorded)
    result = replay_report.report(policy, recorded, replayed, action_mean(policy))
    if out:
        result["plot"] = replay_report.save_plot(out, recorded, replayed, action_mean(policy))
    return result

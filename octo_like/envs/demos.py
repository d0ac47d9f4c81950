"""MetaWorld scripted-expert demonstrations -> an RLDS dataset the data pipeline reads.

The parent process hands whole episodes to spawned simulator workers (`worker.EnvPool`), keeps
the successful ones and streams them into TFDS/RLDS (`data.rlds_writer`), one dataset per call
holding every requested task. Observation keys are ``image_<camera>`` for the variant's cameras
and ``state`` (end-effector xyz + gripper opening); steps carry ``action`` (variant units),
``language_instruction`` (one phrasing per episode), ``reward`` and ``is_terminal`` (= success);
episode metadata records task, variant and seed. ``metaworld_<variant>`` datasets are in the
dataset registry (`variants.dataset_specs`), so the same pipeline and statistics code reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator

import numpy as np

from octo_like.data import rlds_writer as rw
from octo_like.envs.demos_worker import ACTION_LABELS
from octo_like.envs.metaworld_env import MAX_STEPS_AFTER_SUCCESS
from octo_like.envs.tasks import get_task, parse_tasks
from octo_like.envs.variants import (
    PROPRIO_DIM,
    STATE_KEY,
    EmbodimentVariant,
    dataset_name_of,
    get_variant,
)
from octo_like.envs.worker import EnvPool

MAX_ATTEMPTS_PER_EPISODE = 3  # a noisy expert may fail; give up on a task after this many tries


# Bumped when the same config renders different frames: 2 draws the goal marker where the goal
# is from an episode's first frame on (`MetaWorldEnv.reset`); caches of 1 re-collect.
SCENE_REVISION = 2

# CollectionConfig fields added after collections were cached, with their defaults.
_LATER_OPTIONS = {"steps_after_success": 0, "action_labels": "executed", "expert_gain": 1.0}


@dataclasses.dataclass(frozen=True)
class CollectionConfig:
    """What to collect. `episodes_per_task` successful train episodes (and `val_episodes_per_task`
    val episodes) per task; `expert_noise` is the std of Gaussian noise on the expert's xyz
    command (MetaWorld units, actions in [-1, 1]) so demonstrations are not all identical;
    `steps_after_success` more expert steps are kept after the task is solved, so a policy sees
    the expert stay at the goal instead of every episode ending the moment it gets there."""

    tasks: tuple[str, ...]
    episodes_per_task: int
    val_episodes_per_task: int = 1
    variant: str = "default"
    image_size: int | None = None
    expert_noise: float = 0.1
    max_episode_steps: int = 200
    seed: int = 0
    image_encoding: str = "jpeg"
    cameras: tuple[str, ...] | None = None  # a subset of the variant's cameras (None: all)
    steps_after_success: int = 0
    action_labels: str = "executed"  # or "expert": noise-free labels on the noisy rollout (DART)
    expert_gain: float = 1.0  # scales the expert's xyz command before clipping (its corrections)

    def __post_init__(self):
        object.__setattr__(self, "tasks", parse_tasks(self.tasks))
        if self.cameras is not None:
            object.__setattr__(self, "cameras", tuple(self.cameras))
        self.embodiment()
        if self.episodes_per_task < 1 or self.val_episodes_per_task < 0:
            raise ValueError("episodes_per_task must be >= 1 and val_episodes_per_task >= 0")
        if self.image_encoding not in ("jpeg", "png"):
            raise ValueError(f"image_encoding must be jpeg or png, got {self.image_encoding!r}")
        if self.action_labels not in ACTION_LABELS:
            raise ValueError(
                f"action_labels must be one of {ACTION_LABELS}, got {self.action_labels!r}"
            )
        if not self.expert_gain > 0:
            raise ValueError(f"expert_gain must be > 0, got {self.expert_gain}")
        if not 0 <= self.steps_after_success <= MAX_STEPS_AFTER_SUCCESS:
            raise ValueError(
                f"steps_after_success must lie in [0, {MAX_STEPS_AFTER_SUCCESS}], "
                f"got {self.steps_after_success}"
            )

    def embodiment(self) -> EmbodimentVariant:
        return get_variant(self.variant).with_cameras(self.cameras)

    @property
    def resolved_image_size(self) -> int:
        return int(self.image_size or get_variant(self.variant).image_size)

    def fingerprint(self) -> str:
        """Short hash of everything that changes the data (a cache key)."""
        # The variant's rendering too: a changed camera or field of view must re-collect.
        fields = {
            **dataclasses.asdict(self),
            "rendering": self.embodiment().rendering(),
            "scene_revision": SCENE_REVISION,
        }
        # Options at their defaults keep the keys of collections made before they existed.
        for name, default in _LATER_OPTIONS.items():
            if fields[name] == default:
                del fields[name]
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass
class CollectionReport:
    path: str
    episodes: dict[str, int]
    frames: int
    attempts: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def summary(self) -> str:
        return (
            f"wrote {sum(self.episodes.values())} episodes ({self.episodes}), {self.frames} frames "
            f"in {self.seconds:.1f} s = {self.frames_per_second:.0f} frames/s; expert success "
            f"{sum(self.episodes.values())}/{self.attempts} attempts -> {self.path}"
        )


def rlds_schema(config: CollectionConfig) -> rw.RldsSchema:
    variant = config.embodiment()
    size = config.resolved_image_size
    observation = {
        key: rw.image(size, size, encoding=config.image_encoding)
        for key in variant.observation_keys.values()
    }
    observation[STATE_KEY] = rw.tensor((PROPRIO_DIM,))
    return rw.RldsSchema(
        observation=observation,
        step={"action": rw.tensor((variant.action_dim,)), "language_instruction": rw.text()},
        episode_metadata={"task": rw.text(), "variant": rw.text(), "seed": rw.scalar("int64")},
    )


def _episode_columns(result: dict, task: str, variant: str) -> dict:
    """A worker's episode result -> RLDS columns for `rlds_writer.write_episodes`."""
    length = result["length"]
    observation = dict(result["observation"])
    observation[STATE_KEY] = observation.pop("proprio")
    steps = {
        "observation": observation,
        "action": result["action"],
        "language_instruction": [result["instruction"]] * length,
        "reward": result["reward"],
    }
    rw.complete_step_columns(steps, length)
    steps["is_terminal"][-1] = bool(result["success"])
    metadata = {"task": task, "variant": variant, "seed": int(result["seed"])}
    return {"steps": steps, "episode_metadata": metadata}


def _job_seed(config: CollectionConfig, task_index: int, split: str, attempt: int) -> int:
    words = [config.seed, task_index, ("train", "val").index(split), attempt]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31))


def collect_demonstrations(
    out_dir: str,
    config: CollectionConfig,
    *,
    name: str | None = None,
    workers: int = 2,
    progress: bool = True,
    gl_backend: str | None = None,
) -> CollectionReport:
    """Collects `config`'s episodes and writes dataset `name` (default ``metaworld_<variant>``)
    under `out_dir`; returns where it went and how fast it ran."""
    from tqdm import tqdm

    name = name or dataset_name_of(config.variant)
    wanted = {"train": config.episodes_per_task, "val": config.val_episodes_per_task}
    wanted = {split: n for split, n in wanted.items() if n > 0}
    total = sum(wanted.values()) * len(config.tasks)
    counts = {split: 0 for split in wanted}
    stats = {"frames": 0, "attempts": 0}
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"collecting {name}", unit="episode", disable=not progress)

    def episodes(pool: EnvPool, split: str) -> Iterator[dict]:
        needed = {task: wanted[split] for task in config.tasks}
        attempts = {task: 0 for task in config.tasks}
        while any(needed.values()):
            jobs, owners = [], []
            for task_index, task in enumerate(config.tasks):
                if attempts[task] + needed[task] > MAX_ATTEMPTS_PER_EPISODE * wanted[split]:
                    raise RuntimeError(
                        f"the {task!r} expert failed too often ({attempts[task]} attempts for "
                        f"{wanted[split]} {split} episodes); lower expert_noise or raise "
                        "max_episode_steps (--max_steps)"
                    )
                for _ in range(needed[task]):
                    seed = _job_seed(config, task_index, split, attempts[task])
                    attempts[task] += 1
                    owners.append(task)
                    jobs.append(
                        dict(
                            task=task,
                            variant=config.embodiment(),
                            image_size=config.resolved_image_size,
                            max_episode_steps=config.max_episode_steps,
                            expert_noise=config.expert_noise,
                            seed=seed,
                            steps_after_success=config.steps_after_success,
                            action_labels=config.action_labels,
                            expert_gain=config.expert_gain,
                        )
                    )
            for job_index, result in pool.imap_unordered("expert_episode", jobs):
                task = owners[job_index]
                stats["attempts"] += 1
                if not result["success"] or needed[task] == 0:
                    continue
                needed[task] -= 1
                counts[split] += 1
                stats["frames"] += result["length"]
                elapsed = time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(frames_per_s=f"{stats['frames'] / elapsed:.0f}")
                yield _episode_columns(result, task, config.variant)

    with EnvPool(workers, gl_backend=gl_backend) as pool:
        splits = {split: (lambda split=split: episodes(pool, split)) for split in wanted}
        description = (
            f"MetaWorld scripted-expert demonstrations ({config.variant} variant: "
            f"{get_variant(config.variant).description}); tasks: {', '.join(config.tasks)}"
        )
        path = rw.write_episodes(
            out_dir, name, rlds_schema(config), splits, description=description, overwrite=True
        )
    bar.close()
    report = CollectionReport(
        path, counts, stats["frames"], stats["attempts"], time.perf_counter() - start
    )
    with open(os.path.join(os.path.dirname(path), "collection.json"), "w") as f:
        json.dump(
            {
                "config": dataclasses.asdict(config),
                "dataset_spec": config.embodiment().dataset_spec(name).to_dict(),
                "episodes": counts,
                "frames": report.frames,
                "attempts": report.attempts,
                "seconds": report.seconds,
                "frames_per_second": report.frames_per_second,
            },
            f,
            indent=2,
        )
    return report


def cache_root(cache_dir: str, config: CollectionConfig) -> str:
    """Where `ensure_demonstrations` keeps `config`'s dataset: a TFDS data root per config."""
    return os.path.join(os.path.expanduser(cache_dir), config.fingerprint())


def ensure_demonstrations(
    cache_dir: str, config: CollectionConfig, *, workers: int = 2, progress: bool = True
) -> str:
    """The dataset for `config` under ``cache_dir/<fingerprint>/``, collected on first use.

    Returns the TFDS data root holding ``metaworld_<variant>`` (pass it as a DatasetSource
    location)."""
    root = cache_root(cache_dir, config)
    version_dir = os.path.join(root, dataset_name_of(config.variant), "1.0.0")
    if not os.path.exists(os.path.join(version_dir, "dataset_info.json")):
        collect_demonstrations(root, config, workers=workers, progress=progress)
    return root


def all_instructions(tasks: tuple[str, ...]) -> list[str]:
    """Every phrasing of every task (to train a tokenizer on)."""
    return [text for task in tasks for text in get_task(task).instructions]

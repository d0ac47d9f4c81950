"""The demonstrations each arm of a demonstration-count curve trains on, as TFDS split strings.

A target's demonstrations are collected once, at the largest count. For every seed, each task's
episodes are drawn in one order (`paired.nested_demo_subsets`), and the first N of them per task
make the N-demonstration subset: the 5 of a seed lie inside its 10, so a curve's points differ
only by the demonstrations added, and both arms of a seed (fine-tuned and scratch) read the same
split. A subset is a TFDS split string (``train[3:4]+train[7:9]``) that finetune.py takes as
``--config.dataset.split``: the statistics and the pipeline then see only those episodes, as a
user's run on that many demonstrations would.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence

import numpy as np

from octo_like.envs.transfer.paired import nested_demo_subsets

TRAIN = "train"


def episode_tasks(location: str, name: str, split: str = TRAIN) -> list[str]:
    """The task of every episode of dataset `name` at `location` (a data root or its prepared
    directory) in `split`, in the order TFDS split slicing counts them. Steps are not read."""
    import tensorflow_datasets as tfds

    from octo_like.data.builder_dir import open_source

    builder = open_source(location, name)
    # One file at a time: TFDS interleaves 16 shard files by default, and slice indices count
    # the episodes shard after shard.
    in_order = tfds.ReadConfig(interleave_cycle_length=1)
    episodes = builder.as_dataset(split=split, shuffle_files=False, read_config=in_order)
    metadata = episodes.map(lambda episode: episode["episode_metadata"]["task"])
    tasks = [task.decode() for task in metadata.as_numpy_iterator()]
    if not tasks:
        raise ValueError(f"dataset {name!r} at {location}: split {split!r} holds no episode")
    return tasks


def split_of(indices: Sequence[int], total: int, base: str = TRAIN) -> str:
    """A TFDS split string holding exactly the episodes `indices` of `base` (`total` long):
    consecutive indices merged into one slice, `base` itself when it is every episode."""
    chosen = sorted(set(int(i) for i in indices))
    if not chosen or chosen[0] < 0 or chosen[-1] >= total:
        raise ValueError(f"episode indices must lie in [0, {total}), got {list(indices)[:10]}")
    if len(chosen) == total:
        return base
    runs, start = [], chosen[0]
    for previous, index in zip(chosen, chosen[1:] + [None], strict=True):
        if index != previous + 1:
            runs.append(f"{base}[{start}:{previous + 1}]")
            start = index
    return "+".join(runs)


def task_seed(seed: int, task: str) -> int:
    """The draw of `task`'s episodes for `seed`: independent across tasks, and the same for a
    task whatever else the target holds (a stable hash of its name, not its position)."""
    words = [int(seed), zlib.crc32(task.encode())]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def demo_splits(
    tasks_of_episodes: Sequence[str], counts: Sequence[int], seed: int
) -> dict[int, str]:
    """{count: split string} for one seed: `count` demonstrations of every task, each subset
    inside the next. Every task needs at least the largest count."""
    by_task: dict[str, list[int]] = {}
    for index, task in enumerate(tasks_of_episodes):
        by_task.setdefault(task, []).append(index)
    chosen: dict[int, list[int]] = {int(c): [] for c in counts}
    for task in sorted(by_task):
        indices = by_task[task]
        try:
            subsets = nested_demo_subsets(len(indices), counts, task_seed(seed, task))
        except ValueError as error:
            raise ValueError(f"task {task!r}: {error}") from None
        for count, positions in subsets.items():
            chosen[count] += [indices[p] for p in positions]
    total = len(tasks_of_episodes)
    return {count: split_of(indices, total) for count, indices in sorted(chosen.items())}


def plan_splits(
    location: str,
    name: str,
    counts: Sequence[int],
    seeds: Sequence[int],
    record: str | None = None,
) -> dict[tuple[int, int], str]:
    """{(seed, count): split string} over dataset `name`'s train episodes at `location`,
    written to `record` (JSON) when given, so a report's reader sees which demonstrations each
    arm had."""
    tasks = episode_tasks(location, name)
    splits = {(s, c): split for s in seeds for c, split in demo_splits(tasks, counts, s).items()}
    if record:
        os.makedirs(os.path.dirname(record), exist_ok=True)
        blob = {
            "dataset": name,
            "location": location,
            "episodes": len(tasks),
            "splits": {f"seed{s}/{c}demos": split for (s, c), split in splits.items()},
        }
        with open(record, "w") as f:
            json.dump(blob, f, indent=1)
    return splits

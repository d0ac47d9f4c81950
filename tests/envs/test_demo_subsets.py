"""The demonstrations each arm of a curve trains on (`octo_like.envs.transfer.demo_subsets`): split
strings that TFDS reads back as exactly the chosen episodes, nested per seed, the same for both
arms of a seed; checked on a dataset written as the collector writes one (no simulator)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from tensorflow_datasets.core.utils import shard_utils

from octo_like.data import rlds_writer as rw
from octo_like.data.builder_dir import open_source
from octo_like.envs.transfer.demo_subsets import demo_splits, episode_tasks, plan_splits, split_of

NAME = "metaworld_default"
COLLECTED = 20  # per task: 60 episodes in 3 shards of 20, more than TFDS interleaves per block


def test_split_strings_merge_neighbours_and_name_the_whole_split():
    assert split_of([4, 0, 1, 2, 7], total=9) == "train[0:3]+train[4:5]+train[7:8]"
    assert split_of(range(9), total=9) == "train"
    for bad in ([], [9], [-1]):
        with pytest.raises(ValueError, match="episode indices"):
            split_of(bad, total=9)


def interleaved_tasks(per_task: int = 6) -> list[str]:
    """Collection order: tasks finish out of order (the collector's workers)."""
    tasks = ["reach"] * per_task + ["push"] * per_task + ["drawer-open"] * per_task
    return [str(t) for t in np.random.default_rng(3).permutation(tasks)]


def indices_of(split: str, total: int = 18) -> list[int]:
    if split == "train":
        return list(range(total))
    out = []
    for part in split.split("+"):
        start, stop = part[len("train[") : -1].split(":")
        out += range(int(start), int(stop))
    return out


def test_every_task_gets_the_count_and_each_subset_holds_the_smaller_ones():
    tasks = interleaved_tasks()
    splits = demo_splits(tasks, [2, 4, 6], seed=0)
    chosen = {count: indices_of(split) for count, split in splits.items()}
    for count, indices in chosen.items():
        assert collections.Counter(tasks[i] for i in indices) == {
            "reach": count, "push": count, "drawer-open": count
        }  # fmt: skip
    assert set(chosen[2]) < set(chosen[4]) < set(chosen[6]) and splits[6] == "train"
    assert demo_splits(tasks, [2, 4, 6], seed=0) == splits  # the scratch arm reads the same
    assert demo_splits(tasks, [2, 4, 6], seed=1)[2] != splits[2]  # another seed, other demos
    # A task's draw does not depend on the other tasks the target holds.
    reach = [i for i, t in enumerate(tasks) if t == "reach"]
    alone = indices_of(demo_splits(["reach"] * 6, [2], seed=0)[2])
    assert [reach[j] for j in alone] == [i for i in chosen[2] if tasks[i] == "reach"]
    with pytest.raises(ValueError, match="task 'drawer-open': 7 demonstrations asked for, 6"):
        demo_splits(tasks, [7], seed=0)
    # The curve's first counts, run alone (--demos 2,4 --collect_demos 6), draw what the
    # whole curve draws: a curve can be spread over several sittings.
    assert demo_splits(tasks, [2, 4], seed=0) == {2: splits[2], 4: splits[4]}


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> str:
    """A data root holding metaworld_default as the collector writes it: episode metadata
    with the task; train episodes interleaved across tasks, in 3 shard files (TFDS starts a
    new one every ~128 MiB: a real collection has several); a val split."""
    root = str(tmp_path_factory.mktemp("demos"))
    schema = rw.RldsSchema(
        observation={"state": rw.tensor((2,))},
        step={"action": rw.tensor((1,)), "language_instruction": rw.text()},
        episode_metadata={"task": rw.text()},
    )

    def episodes(tasks):
        for i, task in enumerate(tasks):
            steps = {
                "observation": {"state": np.full((3, 2), i, np.float32)},
                "action": np.zeros((3, 1), np.float32),
                "language_instruction": [task] * 3,
            }
            rw.complete_step_columns(steps, 3)
            yield {"steps": steps, "episode_metadata": {"task": task}}

    train = lambda: episodes(interleaved_tasks(COLLECTED))  # noqa: E731
    splits = {"train": train, "val": lambda: episodes(["reach"])}
    with pytest.MonkeyPatch.context() as patch:
        three = lambda self, total_size, num_examples, *a, **k: min(3, num_examples)  # noqa: E731
        patch.setattr(shard_utils.ShardConfig, "calculate_number_shards", three)
        rw.write_episodes(root, NAME, schema, splits)
    return root


def read_split(root: str, split: str) -> list[tuple[str, float]]:
    """(task, the index the episode was generated with) of each episode of `split`, in the
    order TFDS reads them (its default: 16 shard files interleaved)."""
    episodes = open_source(root, NAME).as_dataset(split=split, shuffle_files=False)
    out = []
    for episode in episodes:  # (task, the index the episode was generated with)
        state = next(iter(episode["steps"]))["observation"]["state"][0]
        out.append((episode["episode_metadata"]["task"].numpy().decode(), float(state)))
    return out


def test_tfds_reads_back_exactly_the_planned_demonstrations(collected, tmp_path):
    assert len(open_source(collected, NAME).info.splits["train"].shard_lengths) == 3
    # Episode i is what slicing calls train[i:i+1] (TFDS orders a shard's episodes by key and
    # its default read interleaves the shards: neither is the order they were written in).
    total = 3 * COLLECTED
    in_file_order = [read_split(collected, f"train[{i}:{i + 1}]")[0] for i in range(total)]
    assert episode_tasks(collected, NAME) == [task for task, _ in in_file_order]
    record = str(tmp_path / "subsets" / "test.json")
    splits = plan_splits(collected, NAME, [1, 3], seeds=[0, 1], record=record)
    for (seed, count), split in splits.items():
        read = read_split(collected, split)
        assert collections.Counter(task for task, _ in read) == {
            "reach": count, "push": count, "drawer-open": count
        }, (seed, count, split)  # fmt: skip
        named = indices_of(split, total)
        assert sorted(read) == sorted(in_file_order[i] for i in named)  # all named, no other
    assert {i for _, i in read_split(collected, splits[0, 1])} < {
        i for _, i in read_split(collected, splits[0, 3])
    }
    with open(record) as f:
        saved = json.load(f)
    assert saved["episodes"] == total and saved["splits"]["seed1/3demos"] == splits[1, 3]

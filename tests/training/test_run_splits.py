"""Which split a run trains and validates on (`run_data.run_splits`) as the loop uses it:
`val_split="auto"` (Octo's rule, configs/finetune_octo.py) validates on a dataset's `val` split,
or holds out the last 5% of its training split, which training then no longer reads; the default
(`val_split="val"`, configs/finetune.py) still skips validation for a dataset without one."""

from __future__ import annotations

import dataclasses
import logging
import types

import numpy as np
import pytest

from configs import finetune, finetune_octo
from octo_like.data import rlds
from octo_like.data.pipeline import make_pipeline
from octo_like.training.run import evaluation, run_data
from octo_like.training.run.evaluation import evaluate_held_out
from tests.data.test_splits import ONLY_TRAIN, WITH_VAL, data_config, episode_of, write


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    root = str(tmp_path_factory.mktemp("run_splits"))
    return {
        "stats": str(tmp_path_factory.mktemp("run_splits_stats")),
        WITH_VAL: write(root, WITH_VAL, {"train": 6, "val": 2})[0],
        ONLY_TRAIN: write(root, ONLY_TRAIN, {"train": 20})[0],
    }


def run_config(datasets: dict, name: str, val_split: str, **data):
    """What `run_splits` and `evaluate_held_out` reads of a `TrainConfig`."""
    config = data_config(name, datasets[name], datasets["stats"], **data)
    return types.SimpleNamespace(val_split=val_split, data=config, eval_batches=100)


def evaluated_episodes(config, splits: run_data.RunSplits, prepared) -> tuple[set[int], dict]:
    """The episodes the loop's validation reads (every batch of it), and its metrics."""
    seen: set[int] = set()

    def eval_step(state, batch):
        seen.update(episode_of(a) for a in batch["action"])
        return {"loss": np.float32(1.0)}

    held_out = splits.held_out(prepared)
    metrics = evaluate_held_out(eval_step, None, config.data, rlds.ProcessShard(), held_out,
                             config, lambda batch: batch)  # fmt: skip
    return seen, metrics


def trained_episodes(config, prepared) -> set[int]:
    """The episodes the training pipeline reads: one pass of it, unshuffled."""
    pipeline = make_pipeline(dataclasses.replace(config.data, train=False), prepared=prepared)
    return {episode_of(a) for batch in pipeline for a in batch["action"]}


def test_the_configs_opt_in(datasets):
    default = finetune.get_config()
    assert default.val_split == "val" and default.data.statistics_split is None
    for arg in ("full,multimodal", "head_only,language_conditioned", "example02"):
        octo = finetune_octo.get_config(arg)
        assert (octo.val_split, octo.data.statistics_split) == ("auto", "all"), arg


def test_auto_validates_on_the_val_split_when_there_is_one(datasets, caplog):
    config = run_config(datasets, WITH_VAL, "auto")
    with caplog.at_level(logging.INFO, logger=run_data.__name__):
        splits = run_data.run_splits(config)
    assert [s.split for s in splits.sources] == ["train"] and splits.validation == ("val",)
    assert f"training reads 'train', validation 'val', statistics over 'train': {WITH_VAL}" in (
        caplog.text
    )
    prepared = run_data.prepare_datasets(config, splits.sources)
    assert trained_episodes(config, prepared) == set(range(6))
    seen, metrics = evaluated_episodes(config, splits, prepared)
    assert seen == {6, 7} and metrics == {"loss": 1.0}


def test_auto_without_val_trains_on_95_percent_and_validates_on_the_rest(datasets, caplog):
    config = run_config(datasets, ONLY_TRAIN, "auto", statistics_split="all")
    with caplog.at_level(logging.INFO, logger=run_data.__name__):
        splits = run_data.run_splits(config)
    assert [s.split for s in splits.sources] == ["train[:95%]"]
    assert splits.validation == ("train[95%:]",)
    assert (
        "training reads 'train[:95%]', validation 'train[95%:]', statistics over 'all': "
        f"{ONLY_TRAIN}" in caplog.text
    )
    prepared = run_data.prepare_datasets(config, splits.sources)
    assert prepared[0].statistics.num_trajectories == 20  # "all": the held-out episode too
    trained = trained_episodes(config, prepared)
    held_out, metrics = evaluated_episodes(config, splits, prepared)
    assert len(held_out) == 1 and len(trained) == 19 and metrics
    assert not trained & held_out and trained | held_out == set(range(20))


def test_the_default_still_skips_validation_without_a_val_split(datasets, caplog):
    config = run_config(datasets, ONLY_TRAIN, "val")
    splits = run_data.run_splits(config)
    assert [s.split for s in splits.sources] == ["train"] and splits.validation == ("val",)
    prepared = run_data.prepare_datasets(config, splits.sources)
    assert prepared[0].statistics.num_trajectories == 20  # the training split: all of train
    assert trained_episodes(config, prepared) == set(range(20))
    with caplog.at_level(logging.WARNING, logger=evaluation.__name__):
        seen, metrics = evaluated_episodes(config, splits, prepared)
    assert (seen, metrics) == (set(), {})
    assert f"no validation: dataset {ONLY_TRAIN!r} has no split 'val'" in caplog.text
    assert run_data.run_splits(run_config(datasets, ONLY_TRAIN, "")).validation is None


def test_a_typod_training_split_is_refused_naming_the_dataset_and_its_splits(datasets):
    config = run_config(datasets, WITH_VAL, "auto", source=dict(split="trian"))
    with pytest.raises(ValueError, match=rf"{WITH_VAL!r} has no split 'trian'.*'train', 'val'"):
        run_data.run_splits(config)


def test_validation_reads_a_sample_of_the_whole_split_the_same_for_every_run(tmp_path):
    """Validation reads `eval_batches` batches: 4 x 8 = 32 of a val split's 400 frames (40
    episodes of 10 steps). They are a sample of the whole split: late steps and late episodes
    included, and the same frames whatever the run's seed and at every evaluation. Read in
    order, as before issue 70, they were steps 0 and 1 of the first 16 episodes (16 episodes
    interleave), so the 'val loss' of a run measured its episodes' first frames only."""
    location = write(str(tmp_path), WITH_VAL, {"train": 2, "val": 40}, episode_length=10)[0]
    datasets = {WITH_VAL: location, "stats": str(tmp_path / "stats")}
    samples = []
    for seed in (0, 7, 7):
        config = run_config(datasets, WITH_VAL, "val", seed=seed)
        config.data = dataclasses.replace(config.data, batch_size=8)
        config.eval_batches = 4
        splits = run_data.run_splits(config)
        prepared = run_data.prepare_datasets(config, splits.sources)
        frames = []

        def eval_step(state, batch, frames=frames):
            steps = batch["observation"]["timestep"][:, -1]
            frames.extend(
                (episode_of(a), int(t)) for a, t in zip(batch["action"], steps, strict=True)
            )
            return {"loss": np.float32(1.0)}

        evaluate_held_out(eval_step, None, dataclasses.replace(config.data, train=False),
                          rlds.ProcessShard(), splits.held_out(prepared), config,
                          lambda batch: batch)  # fmt: skip
        samples.append(frames)
    frames = samples[0]
    assert len(frames) == 32 and len(set(frames)) == 32
    assert samples[1] == samples[2] == frames  # the same sample for every seed and evaluation
    steps = np.array([t for _, t in frames])
    episodes = {e for e, _ in frames}
    assert 2.5 <= steps.mean() <= 6.5 and steps.max() >= 7  # uniform over 0-9: mean 4.5 +- 0.5
    assert len(episodes) >= 12 and max(episodes) >= 2 + 24  # val episodes are numbered 2-41
    training = dataclasses.replace(config.data, train=True)
    with pytest.raises(ValueError, match="sample_seed is for a pass that does not train"):
        make_pipeline(training, prepared=prepared, sample_seed=0)

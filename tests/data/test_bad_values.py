"""Bad values are named where they enter (issue 40, item 4, data half): an absurd action in a
user's (``custom``) dataset, statistics with non-finite values from any source, an instruction
that is not UTF-8, a dataset_info.json that lists no shard or leaves one out. Each test first
shows the healthy input accepted."""

from __future__ import annotations

import itertools
import json
import pathlib
import shutil

import numpy as np
import pytest

from octo_like.data import builder_dir, rlds, synthetic
from octo_like.data.config import CameraTransform, DataConfig, DatasetSource, FrameTransformConfig
from octo_like.data.episode_files import EpisodeError, read_episode, write_episode_file
from octo_like.data.pipeline import make_pipeline
from octo_like.data.prepare import prepare_dataset
from octo_like.data.statistics import compute_statistics
from octo_like.data.statistics_cache import statistics_cache_path
from octo_like.data.validation import DataError
from octo_like.normalization import ArrayStatistics, DatasetStatistics
from tests.data.conftest import ONE_CAMERA_SCHEMA, one_camera_spec

BAD_EPISODE, BAD_STEP, BAD_DIM = 1, 2, 1


def _write(root: pathlib.Path, name: str, override=None) -> str:
    return synthetic.write_rlds_dataset(
        str(root), name, ONE_CAMERA_SCHEMA, episodes={"train": 4}, episode_length=6,
        override=override,
    )  # fmt: skip


def _huge_action(split, index, episode):
    if index == BAD_EPISODE:
        episode["steps"]["action"][BAD_STEP, BAD_DIM] = 3e38


def _bad_utf8(split, index, episode):
    if index == BAD_EPISODE:
        episode["steps"]["language_instruction"][BAD_STEP] = b"pick up the \xff\xfe block"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> pathlib.Path:
    """toy_good; toy_huge (one 3e38 action); toy_utf8 (one instruction with invalid bytes)."""
    root = tmp_path_factory.mktemp("bad_values")
    _write(root, "toy_good")
    _write(root, "toy_huge", _huge_action)
    _write(root, "toy_utf8", _bad_utf8)
    return root


def _config(location, name: str, stats_dir: str, **overrides) -> DataConfig:
    """The user's dataset registered as a ``custom`` action space (`one_camera_spec`)."""
    return DataConfig(
        datasets=(DatasetSource(name, str(location)),),
        batch_size=4,
        shuffle_buffer=16,
        statistics_cache_dir=stats_dir,
        frame=FrameTransformConfig(cameras={"primary": CameraTransform(size=(24, 24))}),
        extra_specs={name: one_camera_spec(name)},
        **overrides,
    )


# ------------------------------------------------------------------ out-of-range values
def test_a_3e38_action_in_a_custom_dataset_is_refused_naming_it(root, stats_dir):
    healthy = prepare_dataset(*_args(root, "toy_good", stats_dir)).statistics
    assert np.isfinite(healthy.action.std).all()
    with pytest.raises(DataError) as error:
        prepare_dataset(*_args(root, "toy_huge", stats_dir))
    message = str(error.value)
    assert "dataset 'toy_huge', episode toy_huge-train.tfrecord" in message
    assert f"action' at step {BAD_STEP}, dim {BAD_DIM}, is 3.000e+38" in message


def test_a_3e38_episode_is_skipped_and_counted_when_asked(root, stats_dir):
    config = _config(root, "toy_huge", stats_dir, skip_bad_episodes=True)
    pipeline = make_pipeline(config)
    batches = list(itertools.islice(iter(pipeline), 3))
    assert all(np.abs(b["action"]).max() < 100 for b in batches)
    assert np.abs(pipeline.statistics["toy_huge"].action.mean).max() < 1
    ((dataset, problem),) = pipeline.skipped.counts
    assert dataset == "toy_huge" and "3.000e+38" in problem


def _args(root, name, stats_dir):
    config = _config(root, name, stats_dir)
    return config.datasets[0], config


def test_compute_statistics_refuses_values_whose_square_overflows_float32():
    rng = np.random.default_rng(0)
    trajectories = [{"action": rng.normal(size=(5, 3)).astype(np.float32)} for _ in range(4)]
    compute_statistics(trajectories, proprio_key=None, name="mine")
    trajectories[2]["action"][4, 2] = -3e38
    with pytest.raises(ValueError, match=r"dataset 'mine': trajectory 2: 'action' has 1 value"
                       r"\(s\) beyond .* \(first at step 4, dim 2: -3e\+38\)"):  # fmt: skip
        compute_statistics(trajectories, proprio_key=None, name="mine")


def _statistics_dict(**action_overrides) -> dict:
    fields = {f: [0.0, 1.0] for f in ("mean", "min", "max", "p01", "p99")} | {"std": [1.0, 1.0]}
    action = fields | action_overrides
    return {"action": action, "proprio": None, "num_transitions": 8, "num_trajectories": 2}


def test_loaded_statistics_with_non_finite_values_are_refused_naming_key_and_dim(root, tmp_path):
    assert DatasetStatistics.from_dict(_statistics_dict(), "mine").action.dim == 2
    for std in ([1.0, float("inf")], [1.0, float("nan")], [1.0, 1e30]):
        with pytest.raises(ValueError, match=r"dataset 'mine', 'action': std dim 1 is"):
            DatasetStatistics.from_dict(_statistics_dict(std=std), "mine")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_statistics_dict(mean=[0.0, float("inf")])))  # JSON "Infinity"
    with pytest.raises(ValueError, match=r"mine\.json.*'action': mean dim 1 is inf"):
        DatasetStatistics.load_json(str(path), "mine")
    given = DatasetStatistics.from_dict(_statistics_dict())  # e.g. from process 0
    assert prepare_dataset(*_args(root, "toy_good", str(tmp_path)), statistics=given)
    with pytest.raises(ValueError, match=r"dataset 'toy_good', 'action': mean dim 1 is inf"):
        prepare_dataset(
            *_args(root, "toy_good", str(tmp_path)),
            statistics=DatasetStatistics(
                ArrayStatistics(**_statistics_dict(mean=[0.0, np.inf])["action"]), None, 8, 2
            ),
        )


def test_a_cached_file_with_inf_statistics_is_recomputed_not_used(root, stats_dir, caplog):
    source, config = _args(root, "toy_good", stats_dir)
    healthy = prepare_dataset(source, config).statistics
    (cached,) = pathlib.Path(stats_dir).glob("toy_good_*.json")
    written = json.loads(cached.read_text())
    written["action"]["std"][BAD_DIM] = float("inf")  # e.g. written by an older version
    cached.write_text(json.dumps(written))
    again = prepare_dataset(source, config).statistics
    assert again == healthy
    assert "std dim 1 is inf" in caplog.text and "recomputing" in caplog.text
    assert statistics_cache_path(stats_dir, cached.stem.split("_")[-1], "toy_good") == str(cached)


# ------------------------------------------------------------------ text that is not UTF-8
def test_an_instruction_that_is_not_utf8_is_named_with_dataset_episode_and_field(root, stats_dir):
    healthy = next(iter(make_pipeline(_config(root, "toy_good", stats_dir))))
    assert all(s.decode("utf-8") for s in healthy["task"]["language_instruction"])
    with pytest.raises(DataError) as error:
        make_pipeline(_config(root, "toy_utf8", stats_dir))
    message = str(error.value)
    assert "dataset 'toy_utf8', episode toy_utf8-train.tfrecord" in message
    assert f"task/language_instruction at step {BAD_STEP} is not valid UTF-8" in message
    assert "pick up the \ufffd\ufffd block" in message


def test_an_instruction_that_is_not_utf8_is_skipped_and_counted_when_asked(root, stats_dir):
    pipeline = make_pipeline(_config(root, "toy_utf8", stats_dir, skip_bad_episodes=True))
    for batch in itertools.islice(iter(pipeline), 3):
        for text in batch["task"]["language_instruction"]:
            text.decode("utf-8")  # the tokenizer's decode: never fails now
    ((dataset, problem),) = pipeline.skipped.counts
    assert dataset == "toy_utf8" and "not valid UTF-8" in problem


@pytest.mark.parametrize("per_step", [False, True])
def test_an_episode_file_instruction_that_is_not_utf8_names_the_file(tmp_path, per_step):
    def write(instruction):
        path = tmp_path / "episode.npz"
        write_episode_file(
            path, images={"front": np.zeros((3, 8, 8, 3), np.uint8)},
            action=np.zeros((3, 2), np.float32), instruction="pick",
        )  # fmt: skip
        with np.load(path) as archive:
            arrays = dict(archive)
        arrays["instruction"] = np.asarray([instruction] * 3 if per_step else instruction)
        np.savez(path, **arrays)
        return path

    assert read_episode(write(b"pick up")).instruction == "pick up"
    with pytest.raises(EpisodeError, match=r"episode\.npz: 'instruction(\[0\])?' is not valid "
                       "UTF-8 .*'pick \ufffd'"):  # fmt: skip
        read_episode(write(b"pick \xff"))


def test_an_episode_file_action_beyond_float32_squares_names_the_file(tmp_path):
    def write(value):
        action = np.zeros((3, 2), np.float32)
        action[1, 1] = value
        return write_episode_file(
            tmp_path / "episode.npz", images={"front": np.zeros((3, 8, 8, 3), np.uint8)},
            action=action, instruction="pick",
        )  # fmt: skip

    assert read_episode(write(1e6)).action[1, 1] == 1e6
    with pytest.raises(EpisodeError, match=r"episode\.npz: value\(s\) beyond .* in 'action' at "
                       r"steps \[1\] \(dims \[1\]\), e\.g\. 3e\+38"):  # fmt: skip
        read_episode(write(3e38))


# ------------------------------------------------------------------ shards and dataset_info.json
def _copy(root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    copy = tmp_path / "toy_good" / "1.0.0"
    shutil.copytree(root / "toy_good" / "1.0.0", copy)
    return copy


def _read_all(directory) -> int:
    builder = builder_dir.open_builder(str(directory))
    return sum(1 for _ in rlds.read_episodes(builder, "train", shuffle_files=False))


def test_a_dataset_info_listing_no_shard_is_named_with_the_file(root, tmp_path):
    copy = _copy(root, tmp_path)
    assert _read_all(copy) == 4
    info = json.loads((copy / "dataset_info.json").read_text())
    (train,) = [s for s in info["splits"] if s["name"] == "train"]
    train["shardLengths"] = []
    (copy / "dataset_info.json").write_text(json.dumps(info))
    for shard in copy.glob("toy_good-train.tfrecord-*"):
        shard.unlink()
    with pytest.raises(builder_dir.DatasetMetadataError) as error:
        _read_all(copy)
    message = str(error.value)
    assert "dataset 'toy_good'" in message and str(copy / "dataset_info.json") in message
    assert "lists no shard (0 episodes) for split 'train'" in message


def test_a_shard_file_dataset_info_does_not_list_is_named(root, tmp_path):
    copy = _copy(root, tmp_path)
    assert _read_all(copy) == 4
    (shard,) = copy.glob("toy_good-train.tfrecord-*")
    extra = copy / "toy_good-train.tfrecord-00001-of-00002"
    shutil.copy(shard, extra)  # e.g. a second shard whose listing was lost
    with pytest.raises(builder_dir.DatasetMetadataError) as error:
        _read_all(copy)
    message = str(error.value)
    assert "dataset 'toy_good'" in message and str(extra) in message
    assert "not listed" in message and "dataset_info.json" in message


def test_a_dataset_info_listing_no_shard_beside_a_present_shard_names_both(root, tmp_path):
    copy = _copy(root, tmp_path)
    info = json.loads((copy / "dataset_info.json").read_text())
    for split in info["splits"]:
        split["shardLengths"] = []
    (copy / "dataset_info.json").write_text(json.dumps(info))
    shard = r"toy_good-train\.tfrecord-00000-of-"
    with pytest.raises(builder_dir.DatasetMetadataError, match=shard):
        _read_all(copy)


def _every_action_huge(split, index, episode):
    episode["steps"]["action"][BAD_STEP, BAD_DIM] = 3e38


def test_a_dataset_whose_every_episode_was_skipped_says_how_many_and_why(root, stats_dir):
    """Issue 69 item 5: "has no trajectories" said neither that all 4 were skipped nor why."""
    _write(root, "toy_all_huge", _every_action_huge)
    config = _config(root, "toy_all_huge", stats_dir, skip_bad_episodes=True)
    with pytest.raises(ValueError) as error:
        prepare_dataset(config.datasets[0], config)
    message = str(error.value)
    assert "dataset 'toy_all_huge': all 4 episodes of split 'train' were skipped" in message
    assert "4 x " in message and "3.000e+38" in message

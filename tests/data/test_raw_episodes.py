"""Raw episode files (.npz / .hdf5) -> RLDS: strict reading, round trips, skipping bad files,
registration through `extra_specs`, the TFDS builder template and the command line."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from octo_like.config.typed import build
from octo_like.data.config import DataConfig
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.data.pipeline import make_pipeline
from octo_like.data.raw_episodes import (
    EpisodeError,
    canonical_cameras,
    convert_episodes,
    read_episode,
    split_episode_files,
    suggest_dataset_spec,
    suggest_dataset_spec_for,
    write_episode_file,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
STATE_DIM, ACTION_DIM = 6, 5


def fake_episode(seed: int, length: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {
            "front": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8),
        },
        "state": rng.normal(size=(length, STATE_DIM)).astype(np.float32),
        "action": rng.normal(size=(length, ACTION_DIM)).astype(np.float32),
        "instruction": f"task number {seed}",
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[str, dict[str, dict]]:
    """Six episodes (3 npz, 3 hdf5, lengths 4..9) and what each file holds."""
    root = tmp_path_factory.mktemp("raw")
    written = {}
    for index in range(6):
        name = f"ep_{index}.{'npz' if index % 2 else 'hdf5'}"
        episode = fake_episode(index, length=4 + index)
        if index == 3:  # per-step instructions
            episode["instruction"] = [f"step {t}" for t in range(len(episode["action"]))]
        path = str(root / "episodes" / name)
        if index == 4:  # an HDF5 string dataset instead of the root attribute
            write_episode_file(path, **{**episode, "instruction": ""})
            with h5py.File(path, "a") as file:
                del file.attrs["instruction"]
                file.create_dataset("instruction", data=episode["instruction"])
        else:
            write_episode_file(path, **episode)
        written[name] = episode
    return str(root / "episodes"), written


def read_all(path: str) -> dict[str, dict]:
    """Every episode of every split keyed by its file_path, steps stacked."""
    builder = tfds.builder_from_directory(path)
    episodes = {}
    for split in builder.info.splits:
        for episode in builder.as_dataset(split=split):  # eager: steps is a nested Dataset
            steps = list(episode["steps"].as_numpy_iterator())
            stacked = {
                "action": np.stack([s["action"] for s in steps]),
                "state": np.stack([s["observation"]["state"] for s in steps]),
                "front": np.stack([s["observation"]["front"] for s in steps]),
                "wrist": np.stack([s["observation"]["wrist"] for s in steps]),
                "language": [s["language_instruction"].decode() for s in steps],
                "is_first": np.array([s["is_first"] for s in steps]),
                "is_last": np.array([s["is_last"] for s in steps]),
                "split": split,
            }
            episodes[episode["episode_metadata"]["file_path"].numpy().decode()] = stacked
    return episodes


def test_png_conversion_round_trips_every_value(source, tmp_path, capsys):
    source_dir, written = source
    path = convert_episodes(
        source_dir, str(tmp_path), "toy_robot", val_fraction=0.34, image_encoding="png"
    )
    assert path == str(tmp_path / "toy_robot" / "1.0.0")
    episodes = read_all(path)
    assert set(episodes) == set(written)
    splits = [e["split"] for e in episodes.values()]
    assert splits.count("train") == 4 and splits.count("val") == 2
    for name, episode in written.items():
        got = episodes[name]
        length = len(episode["action"])
        assert len(got["action"]) == length
        np.testing.assert_array_equal(got["action"], episode["action"])
        np.testing.assert_array_equal(got["state"], episode["state"])
        np.testing.assert_array_equal(got["front"], episode["images"]["front"])  # PNG: exact
        np.testing.assert_array_equal(got["wrist"], episode["images"]["wrist"])
        expected = episode["instruction"]
        assert got["language"] == (expected if isinstance(expected, list) else [expected] * length)
        assert got["is_first"].tolist() == [True] + [False] * (length - 1)
        assert got["is_last"].tolist() == [False] * (length - 1) + [True]
    printed = capsys.readouterr().out
    assert "converted 6 episodes (39 steps)" in printed and "train: 4 episodes" in printed
    assert '"proprio_key": "state"' in printed  # the suggested spec


def test_jpeg_is_the_default_and_close_to_the_source(tmp_path):
    folder = tmp_path / "flat"
    episode = fake_episode(0, 4)
    episode["images"]["front"][:] = 120  # noise does not survive JPEG; a flat image does
    write_episode_file(folder / "a.npz", **episode)
    path = convert_episodes(str(folder), str(tmp_path), "flat", verbose=False)
    builder = tfds.builder_from_directory(path)
    assert builder.info.features["steps"]["observation"]["front"].encoding_format == "jpeg"
    assert list(builder.info.splits) == ["train"]  # one file: nothing to hold out
    got = read_all(path)["a.npz"]
    assert got["front"].shape == (4, 16, 16, 3)
    assert np.abs(got["front"].astype(int) - 120).max() <= 2
    np.testing.assert_array_equal(got["action"], episode["action"])


def test_registered_spec_feeds_the_training_pipeline(source, tmp_path):
    source_dir, _ = source
    path = convert_episodes(source_dir, str(tmp_path / "tfds"), "toy_robot", verbose=False)
    suggestion = suggest_dataset_spec_for(path)
    assert suggestion["image_keys"] == {"primary": "front", "secondary": None, "wrist": "wrist"}
    assert suggestion["action_encoding"] == "custom"
    # As a fine-tuning config would hold it: plain dicts, validated by the typed config builder.
    config = build(
        DataConfig,
        {
            "datasets": [{"name": "toy_robot", "location": str(tmp_path / "tfds")}],
            "batch_size": 4,
            "shuffle_buffer": 16,
            "statistics_cache_dir": str(tmp_path / "stats"),
            "trajectory": {"window": 2, "action_horizon": 3},
            "frame": {
                "cameras": {"primary": {"size": (16, 16)}, "wrist": {"size": (8, 8)}},
            },
            "extra_specs": {"toy_robot": suggestion},
        },
    )
    assert isinstance(config.extra_specs["toy_robot"], DatasetSpec)
    pipeline = make_pipeline(config)
    batch = next(iter(pipeline))
    assert batch["action"].shape == (4, 2, 3, ACTION_DIM)
    assert batch["observation"]["proprio"].shape == (4, 2, STATE_DIM)
    assert batch["observation"]["image_primary"].shape == (4, 2, 16, 16, 3)
    assert batch["observation"]["pad_mask_dict"]["image_wrist"].any()
    assert pipeline.statistics["toy_robot"].num_trajectories == 5  # the train split
    assert all(
        text.startswith((b"task", b"step")) for text in batch["task"]["language_instruction"]
    )


def write_bad(path, **changes) -> str:
    episode = {**fake_episode(0, 5), **changes}
    return write_episode_file(path, **episode)


def _nan_action():
    action = fake_episode(0, 5)["action"]
    action[3, 2] = np.nan
    return {"action": action}


BAD_EPISODES = {
    "length mismatch": (lambda: {"state": np.zeros((4, STATE_DIM), np.float32)}, "differ in"),
    "nan action": (_nan_action, r"NaN/Inf in 'action' at steps \[3\] \(dims \[2\]\)"),
    "float images": (
        lambda: {"images": {"front": np.zeros((5, 16, 16, 3), np.float32)}},
        "dtype float32, expected uint8",
    ),
    "grey images": (
        lambda: {"images": {"front": np.zeros((5, 16, 16), np.uint8)}},
        r"expected \[T, h, w, 3\]",
    ),
    "empty": (
        lambda: {
            "images": {"front": np.zeros((0, 16, 16, 3), np.uint8)},
            "state": np.zeros((0, STATE_DIM), np.float32),
            "action": np.zeros((0, ACTION_DIM), np.float32),
        },
        r"empty episode",
    ),
    "action rank": (lambda: {"action": np.zeros(5, np.float32)}, r"expected \[T, D\]"),
}


@pytest.mark.parametrize("suffix", [".npz", ".hdf5"])
@pytest.mark.parametrize("case", sorted(BAD_EPISODES))
def test_bad_episodes_raise_naming_the_file_and_problem(case, suffix, tmp_path):
    changes, message = BAD_EPISODES[case]
    path = write_bad(tmp_path / f"bad{suffix}", **changes())
    with pytest.raises(EpisodeError, match=message) as error:
        read_episode(path)
    assert str(error.value).startswith(path)


@pytest.mark.parametrize("suffix", [".npz", ".hdf5"])
def test_missing_keys_are_listed(suffix, tmp_path):
    path = str(tmp_path / f"missing{suffix}")
    images = fake_episode(0, 3)["images"]
    if suffix == ".npz":
        np.savez(path, **{f"images/{k}": v for k, v in images.items()}, extra=np.zeros(3))
    else:
        with h5py.File(path, "w") as file:
            file.create_dataset("images/front", data=images["front"])
    with pytest.raises(EpisodeError, match=r"missing key\(s\) \['action', 'instruction'\]"):
        read_episode(path)
    empty = tmp_path / f"no_images{suffix}"
    write_episode_file(empty, images={}, action=np.zeros((3, 2)), instruction="x")
    with pytest.raises(EpisodeError, match=r"missing key\(s\) \['images/<camera>'\]"):
        read_episode(empty)


def test_conversion_fails_listing_every_bad_file_and_writes_nothing(source, tmp_path):
    folder = tmp_path / "mixed"
    for index in range(3):
        write_episode_file(folder / f"good_{index}.npz", **fake_episode(index, 5))
    nan = write_bad(folder / "nan.hdf5", **_nan_action())
    other = write_bad(folder / "other_layout.npz", state=np.zeros((5, 3), np.float32))
    with pytest.raises(EpisodeError) as error:
        convert_episodes(str(folder), str(tmp_path / "out"), "mixed", verbose=False)
    message = str(error.value)
    assert "2 of 5 episode file(s) are invalid" in message and "skip_bad" in message
    assert f"{nan}: NaN/Inf in 'action'" in message
    first = str(folder / "good_0.npz")
    assert (
        f"{other}: does not match the dataset's layout: state is [3] in this file but [6] in "
        f"{first} (the first)"
    ) in message
    assert not (tmp_path / "out" / "mixed").exists()


def test_skip_bad_leaves_them_out_with_a_warning(tmp_path, caplog, capsys):
    folder = tmp_path / "mixed"
    for index in range(4):
        write_episode_file(folder / f"good_{index}.npz", **fake_episode(index, 5))
    bad = write_bad(folder / "bad.npz", **_nan_action())
    with caplog.at_level(logging.WARNING):
        path = convert_episodes(
            str(folder), str(tmp_path / "out"), "mixed", skip_bad=True, val_fraction=0.25
        )
    assert "skipping 1 bad episode file(s)" in caplog.text and bad in caplog.text
    assert f"SKIPPED 1 bad file(s):\n    {bad}: NaN/Inf" in capsys.readouterr().out
    episodes = read_all(path)
    assert sorted(episodes) == [f"good_{i}.npz" for i in range(4)]


def test_existing_output_is_refused_unless_overwrite(source, tmp_path):
    source_dir, _ = source
    out = str(tmp_path / "out")
    convert_episodes(source_dir, out, "toy_robot", verbose=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_episodes(source_dir, out, "toy_robot", verbose=False)
    convert_episodes(source_dir, out, "toy_robot", verbose=False, overwrite=True, val_fraction=0)
    assert list(tfds.builder_from_directory(f"{out}/toy_robot/1.0.0").info.splits) == ["train"]
    with pytest.raises(ValueError, match="lower-case"):
        convert_episodes(source_dir, out, "Toy Robot")
    with pytest.raises(FileNotFoundError, match="no episode files"):
        convert_episodes(str(tmp_path), out, "nothing")


def test_split_is_seeded_disjoint_and_complete():
    files = [f"f{i}" for i in range(20)]
    splits = split_episode_files(files, 0.2, seed=0)
    assert len(splits["val"]) == 4 and len(splits["train"]) == 16
    assert sorted(splits["train"] + splits["val"]) == sorted(files)
    assert split_episode_files(files, 0.2, seed=0) == splits
    assert split_episode_files(files, 0.2, seed=1)["val"] != splits["val"]
    tiny = split_episode_files(files[:2], 0.01)  # a positive fraction holds out at least one
    assert len(tiny["train"]) == 1 and len(tiny["val"]) == 1
    assert split_episode_files(files[:1], 0.5) == {"train": ["f0"]}
    with pytest.raises(ValueError, match="val_fraction"):
        split_episode_files(files, 1.0)


def test_spec_suggestion_detects_gripper_and_cameras():
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(50, 6))
    gripper = (np.arange(50) % 7 < 3).astype(np.float32)[:, None]
    spec = suggest_dataset_spec(
        "arm", ["wrist_cam", "top", "side"], has_state=False, actions=np.hstack([deltas, gripper])
    )
    assert spec["action_encoding"] == "eef_pos"
    assert spec["action_normalization_mask"] == [True] * 6 + [False]
    assert spec["image_keys"] == {"primary": "top", "secondary": "side", "wrist": "wrist_cam"}
    assert spec["proprio_key"] is None
    assert DatasetSpec.from_dict(spec).action_encoding.value == "eef_pos"
    # 5 dims with a {-1, 1} gripper: custom encoding, the binary dim still left unnormalized.
    signs = np.sign(rng.normal(size=(50, 1)))
    custom = suggest_dataset_spec(
        "arm", ["rgb"], has_state=True, actions=np.hstack([deltas[:, :4], signs])
    )
    assert custom["action_encoding"] == "custom"
    assert custom["action_normalization_mask"] == [True] * 4 + [False]
    assert canonical_cameras(["a", "b", "c", "primary"]) == (
        {"primary": "primary", "secondary": "a", "wrist": None},
        ["b", "c"],
    )


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with tfds.core.registered.skip_registration():
        spec.loader.exec_module(module)
    return module


def test_builder_template_builds_the_example_episodes(tmp_path):
    examples = _load(REPO / "data" / "make_example_episodes.py", "make_example_episodes")
    paths = examples.write_example_episodes(
        str(tmp_path / "episodes"), num_npz=3, num_hdf5=3, length=(5, 8)
    )
    template = _load(
        REPO / "data" / "my_robot" / "my_robot_dataset_builder.py", "my_robot_dataset_builder"
    )
    builder = template.Builder(data_dir=str(tmp_path / "tfds"))
    assert builder.name == "my_robot"
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "episodes"))
    )
    assert builder.info.splits["train"].num_examples == 5
    assert builder.info.splits["val"].num_examples == 1
    episodes = {}
    for split in ("train", "val"):
        for episode in builder.as_dataset(split=split):
            actions = np.stack([s["action"] for s in episode["steps"].as_numpy_iterator()])
            episodes[episode["episode_metadata"]["file_path"].numpy().decode()] = actions
    assert sorted(episodes) == sorted(os.path.basename(p) for p in paths)
    for path in paths:
        np.testing.assert_array_equal(episodes[os.path.basename(path)], read_episode(path).action)
    # The same files through the converter: the template's features are what it infers.
    converted = convert_episodes(
        str(tmp_path / "episodes"), str(tmp_path / "converted"), "my_robot", verbose=False
    )
    assert tfds.builder_from_directory(converted).info.features.to_json() == (
        builder.info.features.to_json()
    )


def test_command_line_converts_and_writes_a_spec_the_scripts_read(tmp_path):
    examples = _load(REPO / "data" / "make_example_episodes.py", "make_example_episodes")
    examples.main(["--out", str(tmp_path / "episodes"), "--num_npz", "2", "--num_hdf5", "1",
                   "--min_length", "4", "--max_length", "6", "--with_bad_episode"])  # fmt: skip
    cli = _load(REPO / "data" / "convert_raw_episodes.py", "convert_raw_episodes")
    argv = ["--source", str(tmp_path / "episodes"), "--out", str(tmp_path / "tfds")]
    argv += ["--name", "my_robot", "--val_fraction", "0", "--spec_out", str(tmp_path / "spec.json")]
    with pytest.raises(EpisodeError, match="episode_0002.hdf5: NaN/Inf in 'action'"):
        cli.main(argv)
    path = cli.main([*argv, "--skip_bad"])
    assert tfds.builder_from_directory(path).info.splits["train"].num_examples == 2
    spec = DatasetSpec.from_dict(json.loads((tmp_path / "spec.json").read_text()))
    assert spec.action_encoding.value == "eef_pos"  # 6 deltas + a {0, 1} gripper
    assert spec.action_normalization_mask == (True,) * 6 + (False,)
    assert spec.image_keys["primary"] == "front" and spec.image_keys["wrist"] == "wrist"
    # The inspection and statistics scripts read datasets outside the registry through --spec.
    spec_args = ["--data_dir", path, "--spec", str(tmp_path / "spec.json")]
    spec_args += ["--statistics_cache_dir", str(tmp_path / "stats")]
    stats = _load(REPO / "scripts" / "compute_stats.py", "compute_stats").main(spec_args)
    assert len(stats["my_robot"]["action"]["mean"]) == 7
    assert stats["my_robot"]["num_trajectories"] == 2
    inspect = _load(REPO / "scripts" / "inspect_batch.py", "inspect_batch")
    batch = inspect.main([*spec_args, "--batch_size", "2", "--resize", "64", "--wrist_size", "32"])
    assert batch["observation"]["image_primary"].shape == (2, 2, 64, 64, 3)
    assert batch["observation"]["proprio"].shape == (2, 2, 6)

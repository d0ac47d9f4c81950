"""scripts/replay_episode.py end to end: a tiny checkpoint replays an episode of the synthetic
Bridge-format dataset (the one `configs/pretrain.py:debug` trains on), read through the
script's own parser; bad input is one line and exit status 2.

The checkpoint is the inference tests' tiny model (tests/inference/conftest.py: primary 32 px,
wrist 16 px, proprio, 7 robot action dims padded to 8) with host-drawn weights and the
dataset's own statistics, as training records them: what the replay needs of a checkpoint, in
seconds instead of a training run's half minute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import types

import numpy as np
import pytest

from octo_like.data.synthetic import SYNTHETIC_BRIDGE, ensure_synthetic_bridge
from octo_like.inference.replay import Episode, ReplayError, check_episode
from octo_like.inference.replay_report import score
from octo_like.model import testing
from tests.inference import conftest as tiny

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))

import replay_episode  # noqa: E402

EPISODES, ROBOT_P, MODEL_P = 3, 7, 8


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """The dataset (3 train episodes), its spec JSON and a checkpoint with its statistics."""
    from octo_like.data.config import DataConfig, DatasetSource, FrameTransformConfig
    from octo_like.data.frame_transforms import CameraTransform
    from octo_like.data.prepare import prepare_dataset
    from octo_like.data.synthetic import synthetic_bridge_spec
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from octo_like.model.octo_model import action_statistics_entry

    root = tmp_path_factory.mktemp("replay")
    data = ensure_synthetic_bridge(str(root / "data"), episodes=EPISODES, episode_length=(10, 14))
    spec = synthetic_bridge_spec()  # outside the registry: train.py adds it as extra_specs
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()))
    cameras = {"primary": CameraTransform((32, 32)), "wrist": CameraTransform((16, 16))}
    config = DataConfig(
        datasets=(DatasetSource(SYNTHETIC_BRIDGE, data),),
        statistics_cache_dir=str(root / "stats"),
        extra_specs={SYNTHETIC_BRIDGE: spec},
        frame=FrameTransformConfig(cameras=cameras),
    )
    statistics = prepare_dataset(config.datasets[0], config).statistics.to_dict()
    entry = action_statistics_entry(statistics, "normal", spec.action_normalization_mask)
    batch = tiny.example_batch()
    batch["observation"]["proprio"] = np.zeros((1, tiny.WINDOW, MODEL_P), np.float32)
    batch["observation"]["proprio_pad_mask"] = np.ones((1, tiny.WINDOW, MODEL_P), bool)
    config = tiny.tiny_config(write_tiny_t5_checkpoint(str(root / "t5")))
    model = testing.host_initialized_model(config, batch, {SYNTHETIC_BRIDGE: entry})
    checkpoint = str(root / "checkpoints")
    model.save_pretrained(2, checkpoint)
    return {
        "root": root,
        "data": data,
        "checkpoint": checkpoint,
        "spec": str(spec_path),
        "mean": np.asarray(entry["statistics"]["action"]["mean"], np.float64),
    }


def argv(run: dict, *extra: str) -> list[str]:
    return ["--checkpoint", run["checkpoint"], "--data_dir", run["data"], "--spec", run["spec"],
            *extra]  # fmt: skip


def recorded_actions(data: str, episode: int) -> np.ndarray:
    """The episode's actions read by TFDS itself (the spec's standardization is the identity)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(data)
    (record,) = builder.as_dataset(split=f"train[{episode}:{episode + 1}]")
    return np.stack([step["action"].numpy() for step in record["steps"]]).astype(np.float64)


def test_replay_prints_finite_scores_as_json_and_plots(run, capsys):
    out = run["root"] / "replay.png"
    result = replay_episode.main(
        argv(run, "--episode", "1", "--exec_horizon", "2", "--out", str(out), "--json")
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and json.loads(printed[0]) == json.loads(json.dumps(result))
    keys = {"dataset", "split", "episode", "steps", "instruction", "checkpoint_step",
            "exec_horizon", "chunks", "per_dim", "overall", "octo", "plot"}  # fmt: skip
    assert keys <= set(result)
    assert (result["dataset"], result["episode"], result["exec_horizon"]) == (
        SYNTHETIC_BRIDGE,
        1,
        2,
    )
    steps = result["steps"]
    assert 10 <= steps <= 14 and result["chunks"] == math.ceil(steps / 2)
    assert result["conditioning"] == "language" and result["instruction"]
    per_dim, overall = result["per_dim"], result["overall"]
    for name in ("mae", "mean_action_mae", "predicted_std", "recorded_std"):
        assert len(per_dim[name]) == 7 and all(math.isfinite(v) for v in per_dim[name]), name
    assert all(c is None or -1 <= c <= 1 for c in per_dim["correlation"])
    assert all(math.isfinite(overall[k]) for k in ("mae", "mean_action_mae", "mae_ratio"))
    # The hover baseline is the checkpoint's mean action against this episode's actions.
    expected = np.abs(recorded_actions(run["data"], 1) - run["mean"]).mean(axis=0)
    np.testing.assert_allclose(per_dim["mean_action_mae"], expected, rtol=1e-5, atol=1e-6)
    assert overall["mean_action_mae"] == pytest.approx(expected.mean(), rel=1e-5)
    # 7-dim eef_pos with a binary gripper that closes halfway: every Octo metric is defined.
    octo = result["octo"]
    assert octo["moving_steps"] > 0 and octo["gripper_change_steps"] > 0
    assert 0 <= octo["xyz_angle"] <= math.pi
    assert 0 <= octo["xyz_accuracy"] <= 1 and 0 <= octo["gripping_accuracy"] <= 1
    assert out.stat().st_size > 1000


def test_an_episode_out_of_range_exits_2_naming_dataset_and_index(run, capsys):
    with pytest.raises(SystemExit) as exit_:
        replay_episode.main(argv(run, "--episode", str(EPISODES)))
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"dataset {SYNTHETIC_BRIDGE!r} train has {EPISODES} episodes" in line
    assert f"episode {EPISODES} is out of range" in line


def test_a_camera_key_missing_from_the_data_exits_2_naming_it(run, capsys):
    spec = json.loads(pathlib.Path(run["spec"]).read_text())
    spec["image_keys"]["wrist"] = "image_7"
    path = run["root"] / "wrong_spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SystemExit) as exit_:
        replay_episode.main(["--checkpoint", run["checkpoint"], "--data_dir", run["data"],
                             "--spec", str(path), "--episode", "2"])  # fmt: skip
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"dataset {SYNTHETIC_BRIDGE!r} train episode 2" in line
    assert "'wrist'" in line and "'image_7'" in line


def test_another_action_or_proprio_width_is_refused_naming_the_episode():
    policy = types.SimpleNamespace(action_dim=7, proprio_dim=7, dataset_name="bridge")
    episode = Episode(
        dataset="my_robot", split="train", index=4, episode_id="x", instruction="",
        images={}, proprio=np.zeros((6, 7), np.float32), actions=np.zeros((6, 5), np.float32),
        encoding="custom",
    )  # fmt: skip
    with pytest.raises(ReplayError, match=r"'my_robot' train episode 4: action has 5 dims"):
        check_episode(policy, episode)
    episode = dataclasses.replace(
        episode, actions=np.zeros((6, 7), np.float32), proprio=np.zeros((6, 3), np.float32)
    )
    with pytest.raises(ReplayError, match=r"episode 4: proprio has 3 dims, the model reads 7"):
        check_episode(policy, episode)


def test_a_policy_hovering_at_the_mean_scores_a_ratio_of_one():
    rng = np.random.default_rng(0)
    recorded = rng.normal(size=(20, 7)).cumsum(axis=0)
    mean = recorded.mean(axis=0) + 0.1
    hovering = score(np.broadcast_to(mean, recorded.shape), recorded, mean, "x", "eef_pos")
    assert hovering["overall"]["mae_ratio"] == pytest.approx(1.0)
    assert hovering["per_dim"]["correlation"] == [None] * 7
    assert hovering["per_dim"]["predicted_std"] == pytest.approx([0.0] * 7, abs=1e-12)
    following = score(recorded + 0.01, recorded, mean, "x", "custom")
    assert following["overall"]["mae_ratio"] < 0.1
    assert following["per_dim"]["correlation"] == pytest.approx([1.0] * 7)
    assert following["octo"] is None and "eef_pos" in following["octo_skipped"]

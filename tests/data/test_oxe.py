"""OXE registry, standardization functions and mixes.

Every magic-soup dataset is exercised on a trajectory with its published feature names and
shapes (images shrunk to 8x8), inside ``tf.data.Dataset.map`` and eagerly; a few are also written
as real RLDS files and read back through TFDS, and Bridge runs on the shared real shard.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data import synthetic
from octo_like.data.oxe import (
    MIXES,
    OXE_DATASETS,
    STANDARDIZERS,
    ActionEncoding,
    DatasetSpec,
    StandardizationError,
    UnknownNameError,
    action_families,
    get_dataset_spec,
    resolve_mix,
    standardize_trajectory,
    standardizer_for,
)
from tests.data.oxe_cases import (
    CASES,
    EXT,
    IMG,
    SEP,
    Case,
    T,
    _flat,
)

MAGIC_SOUP = [name for name, _ in MIXES["oxe_magic_soup"]]


def _set_gripper(steps: dict, case: Case) -> None:
    if case.gripper_path is None:
        return
    parent = steps
    for key in case.gripper_path[:-1]:
        parent = parent[key]
    leaf = case.gripper_path[-1]
    values = np.asarray(case.raw_gripper)
    if case.gripper_column is None:
        parent[leaf] = values.astype(parent[leaf].dtype)
    else:
        parent[leaf][:, case.gripper_column] = values


def _to_tf(value, feature) -> tf.Tensor:
    if feature.kind == "image":
        return tf.stack([tf.io.encode_jpeg(frame) for frame in value])
    return tf.constant(value)


def make_trajectory(case: Case, seed: int = 0) -> dict:
    """A trajectory (stage-1 layout, images encoded) from the case's published schema."""
    schema = _flat(case)
    episode = synthetic.make_episode(schema, np.random.default_rng(seed), T, "open the drawer")
    steps = episode["steps"]
    for key in [k for k in steps if SEP in k]:
        outer, inner = key.split(SEP)
        steps.setdefault(outer, {})[inner] = steps.pop(key)
    _set_gripper(steps, case)
    traj = {"observation": {}}
    for key, value in steps.items():
        if key == "observation":
            traj["observation"] = {k: _to_tf(v, case.observation[k]) for k, v in value.items()}
        elif isinstance(value, dict):
            traj[key] = {k: tf.constant(v) for k, v in value.items()}
        else:
            traj[key] = tf.constant(value)
    if case.metadata:
        traj["episode_metadata"] = {
            k: tf.constant(v) for k, v in episode["episode_metadata"].items()
        }
    return traj


def in_map(spec: DatasetSpec, traj: dict) -> dict:
    """`standardize_trajectory` run in graph mode inside tf.data, as the pipeline runs it."""
    dataset = tf.data.Dataset.from_tensors(traj).map(standardizer_for(spec))
    return tf.nest.map_structure(lambda x: x.numpy(), next(iter(dataset)))


def test_registry_covers_the_magic_soup():
    assert len(MAGIC_SOUP) == len(set(MAGIC_SOUP)) == 25
    assert set(MAGIC_SOUP) <= set(OXE_DATASETS) == set(CASES)
    for spec in OXE_DATASETS.values():
        assert spec.standardize in STANDARDIZERS
        assert set(spec.image_keys) == {"primary", "secondary", "wrist"}
        assert spec.action_normalization_mask == (True,) * 6 + (False,)


@pytest.mark.parametrize("name", MAGIC_SOUP)
def test_standardize_each_dataset(name):
    case, spec = CASES[name], OXE_DATASETS[name]
    for camera, key in spec.image_keys.items():
        if key is not None:
            assert case.observation.get(key) == IMG, f"{name}: camera {camera} -> {key!r}"
    traj = make_trajectory(case)
    raw_action = traj["action"]
    out = in_map(spec, traj)
    assert traj["action"] is raw_action, "the input trajectory must not be mutated"

    length = len(case.expected_gripper)
    action = out["action"]
    assert action.dtype == np.float32 and action.shape == (length, 7)
    assert np.isfinite(action).all()
    np.testing.assert_array_equal(action[:, 6], case.expected_gripper)
    eager = standardize_trajectory(spec, make_trajectory(case))
    np.testing.assert_allclose(eager["action"].numpy(), action, rtol=1e-6)

    if case.proprio_dim is None:
        assert spec.proprio_key is None
    else:
        proprio = out["observation"][spec.proprio_key]
        assert proprio.shape == (length, case.proprio_dim) and np.isfinite(proprio).all()
    for key in filter(None, spec.image_keys.values()):
        images = out["observation"][key]
        assert images.shape == (length,) and images[0][:2] == b"\xff\xd8"  # still JPEG bytes
    if spec.language_key is not None:
        language = action_families.get_path(out, spec.language_key)
        assert language.shape == (length,) and isinstance(language[0], bytes)


def test_rt1_dict_action_keeps_layout():
    """Position and rotation come from their named entries, in order, untouched."""
    traj = make_trajectory(CASES["fractal20220817_data"], seed=3)
    out = in_map(OXE_DATASETS["fractal20220817_data"], traj)
    np.testing.assert_allclose(out["action"][:, :3], traj["action"]["world_vector"].numpy())
    np.testing.assert_allclose(out["action"][:, 3:6], traj["action"]["rotation_delta"].numpy())
    expected = np.concatenate(
        [traj["observation"]["base_pose_tool_reached"], traj["observation"]["gripper_closed"]], -1
    )
    np.testing.assert_allclose(out["observation"]["proprio"], expected)


def test_relative_gripper_initial_state():
    to_absolute = action_families.gripper_relative_to_absolute
    np.testing.assert_array_equal(to_absolute(tf.zeros([3])), [1, 1, 1])  # no command: open
    np.testing.assert_array_equal(to_absolute(tf.constant([0.0, -1.0, 0.0])), [0, 1, 1])
    np.testing.assert_array_equal(to_absolute(tf.zeros([0])), np.zeros([0]))


def test_kuka_zlib_compressed_state_is_decoded():
    case, spec = CASES["kuka"], OXE_DATASETS["kuka"]
    traj = make_trajectory(case)
    keys = ("clip_function_input/base_pose_tool_reached", "gripper_closed")
    originals = [traj["observation"][k].numpy() for k in keys]
    for key, value in zip(keys, originals, strict=True):
        traj["observation"][key] = tf.constant([zlib.compress(row.tobytes()) for row in value])
    out = in_map(spec, traj)
    np.testing.assert_allclose(out["observation"]["proprio"], np.concatenate(originals, -1))


def test_bridge_relabels_actions_from_reached_states():
    traj = make_trajectory(CASES["bridge_dataset"])
    state = np.zeros([T, 7], np.float32)
    state[:, 0] = [0.0, 0.1, 0.3, 0.6]
    state[:, 3] = [3.1, -3.1, -3.0, 3.0]  # roll crosses the +-pi seam
    traj["observation"]["state"] = tf.constant(state)
    out = in_map(OXE_DATASETS["bridge_dataset"], traj)
    np.testing.assert_allclose(out["action"][:, 0], [0.1, 0.2, 0.3], rtol=1e-5)
    np.testing.assert_allclose(
        out["action"][:, 3], [2 * math.pi - 6.2, 0.1, 6.0 - 2 * math.pi], atol=1e-5
    )
    assert out["observation"]["image_0"].shape == (T - 1,)
    assert out["episode_metadata"]["episode_id"].shape == ()  # metadata is not truncated


def test_quaternion_actions_become_roll_pitch_yaw():
    name = f"furniture_bench_dataset{EXT}"
    traj = make_trajectory(CASES[name])
    action = traj["action"].numpy()
    half = np.pi / 4  # a 90 degree yaw, then a 60 degree roll
    action[:, 3:7] = [0.0, 0.0, np.sin(half), np.cos(half)]
    action[1, 3:7] = [np.sin(np.pi / 6), 0.0, 0.0, np.cos(np.pi / 6)]
    traj["action"] = tf.constant(action)
    out = in_map(OXE_DATASETS[name], traj)
    np.testing.assert_allclose(out["action"][0, 3:6], [0, 0, np.pi / 2], atol=1e-6)
    np.testing.assert_allclose(out["action"][1, 3:6], [np.pi / 3, 0, 0], atol=1e-6)


def test_missing_key_names_dataset_and_key():
    name = f"stanford_hydra_dataset{EXT}"
    traj = make_trajectory(CASES[name])
    del traj["observation"]["state"]
    with pytest.raises(StandardizationError, match=rf"{name}.*'observation/state'"):
        in_map(OXE_DATASETS[name], traj)
    flat = make_trajectory(CASES[name])
    wrong = dataclasses.replace(OXE_DATASETS[name], standardize="rt1")
    with pytest.raises(StandardizationError, match="expects a dict 'action'"):
        in_map(wrong, flat)
    fanuc = make_trajectory(CASES["berkeley_fanuc_manipulation"])  # 6-dim action, no gripper
    wrong = dataclasses.replace(
        OXE_DATASETS["berkeley_fanuc_manipulation"], standardize="gripper_clip"
    )
    with pytest.raises(
        StandardizationError, match=r"'action' has shape \(4, 6\), this layout needs \[T, >= 7\]"
    ):
        in_map(wrong, fanuc)


def test_checks_on_the_standardized_trajectory():
    traj = make_trajectory(CASES[f"ucsd_kitchen_dataset{EXT}"])  # 8-dim raw action
    identity = DatasetSpec("my_robot", {"primary": "image"}, proprio_key="state")
    with pytest.raises(StandardizationError, match=r"my_robot.*\[T, 7\]"):
        standardize_trajectory(identity, traj)
    no_camera = dataclasses.replace(
        identity, image_keys={"wrist": "wrist_cam"}, standardize="gripper_clip"
    )
    with pytest.raises(
        StandardizationError, match="camera 'wrist' reads observation key 'wrist_cam'"
    ):
        standardize_trajectory(no_camera, traj)
    unknown = dataclasses.replace(identity, standardize="gripper_flipp")
    with pytest.raises(StandardizationError, match="did you mean 'gripper_flip'"):
        standardize_trajectory(unknown, traj)


# --- real files --------------------------------------------------------------------------------

WRITTEN = ("language_table", f"furniture_bench_dataset{EXT}", f"austin_buds_dataset{EXT}")
INSTRUCTION = "push the red star to the top left"


def _language_table_override(split, index, episode):
    codes = np.zeros([T, 512], np.int32)
    codes[:, : len(INSTRUCTION)] = list(INSTRUCTION.encode())
    episode["steps"]["observation"]["instruction"] = codes


def read_trajectories(path: str, image_keys) -> tf.data.Dataset:
    """TFDS episodes -> trajectories with images still encoded."""
    builder = tfds.builder_from_directory(path)
    skip = {key: tfds.decode.SkipDecoding() for key in image_keys}
    episodes = builder.as_dataset(split="train", decoders={"steps": {"observation": skip}})

    def to_trajectory(episode):
        traj = episode["steps"].batch(1_000_000).get_single_element()
        if "episode_metadata" in episode:
            traj["episode_metadata"] = episode["episode_metadata"]
        return traj

    return episodes.map(to_trajectory)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("oxe"))
    paths = {}
    for name in WRITTEN:
        override = _language_table_override if name == "language_table" else None
        paths[name] = synthetic.write_rlds_dataset(
            root,
            name,
            _flat(CASES[name]),
            episodes={"train": 1},
            episode_length=T,
            override=override,
        )
    return paths


@pytest.mark.parametrize("name", WRITTEN)
def test_real_rlds_files(written, name):
    case, spec = CASES[name], OXE_DATASETS[name]
    image_keys = [k for k, f in case.observation.items() if f.kind == "image"]
    raw = next(iter(read_trajectories(written[name], image_keys)))
    out = next(iter(read_trajectories(written[name], image_keys).map(standardizer_for(spec))))
    assert out["action"].shape == (T, 7) and out["action"].dtype == tf.float32
    assert out["observation"][spec.proprio_key].shape == (T, case.proprio_dim)
    moved = min(3, raw["action"].shape[-1])  # language_table moves in the plane only
    np.testing.assert_allclose(out["action"][:, :moved], raw["action"][:, :moved])
    if name == "language_table":
        assert out["language_instruction"].numpy().tolist() == [INSTRUCTION.encode()] * T
        np.testing.assert_array_equal(out["action"][:, 2:], np.tile([0, 0, 0, 0, 1], (T, 1)))


def test_bridge_on_the_real_shard(bridge_dir):
    spec = get_dataset_spec("bridge_dataset")
    assert dict(spec.image_keys) == {"primary": "image_0", "secondary": "image_1", "wrist": None}
    builder = tfds.builder_from_directory(bridge_dir)
    cameras = [f"image_{i}" for i in range(4)]
    assert set(cameras) <= set(builder.info.features["steps"]["observation"].keys())
    trajectories = read_trajectories(bridge_dir, cameras).take(3)
    for raw, out in zip(trajectories, trajectories.map(standardizer_for(spec)), strict=True):
        length = raw["action"].shape[0] - 1
        assert out["action"].shape == (length, 7)
        assert set(np.unique(out["action"][:, 6])) <= {0.0, 1.0}
        state = raw["observation"]["state"].numpy()
        np.testing.assert_allclose(out["action"][:, :3], state[1:, :3] - state[:-1, :3], atol=1e-6)
        for key in ("image_0", "image_1"):
            assert out["observation"][key].dtype == tf.string
            assert out["observation"][key].shape == (length,)
        assert out["language_instruction"].shape == (length,)


# --- specs and mixes ---------------------------------------------------------------------------


def test_spec_round_trip_through_json():
    for spec in OXE_DATASETS.values():
        data = json.loads(json.dumps(spec.to_dict()))
        again = DatasetSpec.from_dict(data)
        assert again == spec and hash(again) == hash(spec)
        assert pickle.loads(pickle.dumps(spec)) == copy.deepcopy(spec) == spec
    custom = DatasetSpec(
        "arm", {"primary": "cam"}, None, None, ActionEncoding.JOINT_POS, (True,) * 7 + (False,)
    )
    assert DatasetSpec.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom


def test_spec_rejects_bad_input():
    good = OXE_DATASETS["bridge_dataset"].to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['proprio'\]"):
        DatasetSpec.from_dict({**good, "proprio": "state"})
    with pytest.raises(ValueError, match="unknown action_encoding 'eef'"):
        DatasetSpec.from_dict({**good, "action_encoding": "eef"})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['image_keys'\]"):
        DatasetSpec.from_dict({k: v for k, v in good.items() if k != "image_keys"})
    with pytest.raises(ValueError, match="image key of 'primary'"):
        DatasetSpec("x", {"primary": 3}, None)
    spec = OXE_DATASETS["bridge_dataset"]
    with pytest.raises(TypeError):
        spec.image_keys["wrist"] = "image_2"  # specs are immutable
    with pytest.raises(TypeError):
        STANDARDIZERS["mine"] = lambda t: t


def test_magic_soup_weights_are_the_published_ones():
    weights = dict(MIXES["oxe_magic_soup"])
    assert weights["fractal20220817_data"] == pytest.approx(0.54087122203)
    assert weights["kuka"] == pytest.approx(0.8341046294)
    assert weights["language_table"] == weights[f"furniture_bench_dataset{EXT}"] == 0.1
    assert weights[f"nyu_franka_play_dataset{EXT}"] == 3.0
    for mix_name, mix in MIXES.items():
        resolved = resolve_mix(mix_name)
        assert [s.name for s, _ in resolved] == [n for n, _ in mix]
        assert all(w > 0 and math.isfinite(w) for _, w in resolved), mix_name


def test_unknown_names_suggest_close_ones():
    with pytest.raises(KeyError, match="did you mean 'bridge_dataset'"):
        resolve_mix([("bridge_datset", 1.0)])
    with pytest.raises(ValueError, match="did you mean 'oxe_magic_soup'"):
        resolve_mix("oxe_magic_sop")
    with pytest.raises(UnknownNameError, match="known datasets: "):
        get_dataset_spec("zzz")


@pytest.mark.parametrize(
    "mix, message",
    [
        ([("bridge_dataset", 0.0)], "must be a finite number > 0"),
        ([("bridge_dataset", -1.0)], "must be a finite number > 0"),
        ([("bridge_dataset", float("nan"))], "must be a finite number > 0"),
        ([("bridge_dataset", True)], "must be a finite number > 0"),
        ([("bridge_dataset", 1.0), ("bridge_dataset", 2.0)], "listed twice"),
        ([], "is empty"),
        (["bridge_dataset"], r"\(dataset name, weight\) pairs"),
    ],
)
def test_bad_mixes(mix, message):
    with pytest.raises(ValueError, match=message):
        resolve_mix(mix)


def test_extra_specs_extend_and_override():
    mine = DatasetSpec("my_robot", {"primary": "cam"}, "joints", standardize="gripper_flip")
    bridge = dataclasses.replace(OXE_DATASETS["bridge_dataset"], language_key=None)
    extra = {"my_robot": mine, "bridge_dataset": bridge}
    resolved = resolve_mix([("my_robot", 2.0), ("bridge_dataset", 1)], extra)
    assert resolved == [(mine, 2.0), (bridge, 1.0)]
    assert get_dataset_spec("bridge_dataset").language_key == "language_instruction"
    with pytest.raises(ValueError, match="differs from its spec's name"):
        get_dataset_spec("x", {"x": mine})
    typo = dataclasses.replace(mine, standardize="gripper_clipp")
    with pytest.raises(KeyError, match="my_robot.*did you mean 'gripper_clip'"):
        get_dataset_spec("my_robot", {"my_robot": typo})

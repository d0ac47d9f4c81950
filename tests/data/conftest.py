"""Synthetic RLDS datasets shared by the data tests (written once per session, in seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from octo_like.data import synthetic

TOY_SCHEMA = synthetic.RldsSchema(
    observation={
        "image_0": synthetic.image(32, 32),
        "wrist": synthetic.image(16, 16),
        "state": synthetic.tensor((5,)),
    },
    step={"action": synthetic.tensor((7,)), "language_instruction": synthetic.text()},
)

ONE_CAMERA_SCHEMA = synthetic.RldsSchema(
    observation={"rgb": synthetic.image(24, 24), "joints": synthetic.tensor((3,))},
    step={"action": synthetic.tensor((4,)), "language_instruction": synthetic.text()},
)


def toy_spec(name: str):
    from octo_like.data.oxe.spec import DatasetSpec

    return DatasetSpec(
        name=name,
        image_keys={"primary": "image_0", "wrist": "wrist"},
        proprio_key="state",
        standardize="identity",
    )


def one_camera_spec(name: str):
    from octo_like.data.oxe.spec import ActionEncoding, DatasetSpec

    return DatasetSpec(
        name=name,
        image_keys={"primary": "rgb"},
        action_encoding=ActionEncoding.CUSTOM,
        proprio_key="joints",
        standardize="identity",
        action_normalization_mask=(True, True, True, False),
    )


def index_coded_actions(split, index, episode):
    """action[t] = t + dim / 10 (and the episode index in the hundreds) to expose index bugs."""
    length = len(episode["steps"]["is_first"])
    dims = episode["steps"]["action"].shape[1]
    t = np.arange(length, dtype=np.float32)[:, None]
    episode["steps"]["action"] = (100 * index + t + np.arange(dims) / 10).astype(np.float32)
    return episode


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A TFDS data root with good and deliberately broken toy datasets."""
    root = str(tmp_path_factory.mktemp("rlds"))
    synthetic.write_rlds_dataset(
        root, "toy_a", TOY_SCHEMA, episodes={"train": 8, "val": 2}, episode_length=(6, 12)
    )
    synthetic.write_rlds_dataset(
        root, "toy_b", ONE_CAMERA_SCHEMA, episodes={"train": 6}, episode_length=(5, 9), seed=1
    )
    synthetic.write_rlds_dataset(
        root,
        "toy_indexed",
        TOY_SCHEMA,
        episodes={"train": 3},
        episode_length=5,
        override=index_coded_actions,
    )

    def nan_action(split, index, episode):
        if index == 2:
            episode["steps"]["action"][3, 1] = np.nan

    def zero_length(split, index, episode):
        if index == 1:
            return synthetic.make_episode(TOY_SCHEMA, np.random.default_rng(0), 0, "nothing")

    def undecodable(split, index, episode):
        if index == 0:
            length = len(episode["steps"]["is_first"])
            episode["steps"]["observation"]["image_0"] = [b"not an image"] * length

    for name, override in (
        ("toy_nan", nan_action),
        ("toy_zero", zero_length),
        ("toy_badimg", undecodable),
    ):
        synthetic.write_rlds_dataset(
            root, name, TOY_SCHEMA, episodes={"train": 4}, episode_length=6, override=override
        )
    return root


@pytest.fixture()
def stats_dir(tmp_path) -> str:
    return str(tmp_path / "stats")

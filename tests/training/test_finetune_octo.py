"""Fine-tuning from an imported Octo-1.5 checkpoint, as Octo's examples/02 does (a new 14-dim L1
head with 50-step chunks, a new proprio tokenizer, T5 frozen) plus what a new robot needs (a new
camera beside the pretrained one), on the converted fixture: the reuse table says what was kept,
the run trains, and the result loads and acts in the new robot's units."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from configs import finetune_octo
from octo_like.model.base_checkpoint import flat_params
from octo_like.model.octo_import.convert import convert_octo
from octo_like.model.octo_model import OctoModel
from tests.training.robots import two_step_run, write_robot_dataset

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
ROBOT = "aloha_like"
A, H = 14, 50
OFFSET = np.linspace(-3.0, 3.0, A).astype(np.float32)


def write_robot(data_dir: str) -> str:
    """`top` (the pretrained primary camera's size, 32 px) and `side` (new), 14-dim joints and
    14-dim actions around OFFSET."""
    return write_robot_dataset(
        data_dir, ROBOT, cameras={"top": (32, 32), "side": (32, 32)}, proprio_dim=A,
        offset=OFFSET, gripper=False, episodes={"train": 4, "val": 1}, episode_length=(12, 16),
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("octo_finetune")
    pretrained = str(root / "octo_small_native")
    convert_octo(os.path.join(FIXTURE, "octo_tiny"), os.path.join(FIXTURE, "tiny_t5"), pretrained)
    return {"root": root, "pretrained": pretrained, "data": write_robot(str(root / "data"))}


def octo_example_config(setup: dict):
    """configs/finetune_octo.py:example02 (Octo's examples/02 as a config) with a camera the
    pretrained model never saw added, at the fixture's sizes."""
    config = finetune_octo.get_config("example02")
    assert (config.model.action_dim, config.data.trajectory.action_horizon) == (A, H)
    assert config.model.head.kind == "l1" and config.model.head.kwargs["use_map"]
    assert config.model.proprio["mode"] == "per_dim_value"
    config.pretrained_path = setup["pretrained"]
    config.dataset.name = ROBOT
    config.dataset.location = setup["data"]
    spec = dict(config.data.extra_specs["my_robot"])
    spec.update(image_keys=dict(primary="top", side="side"), proprio_key="joints")
    config.data.extra_specs = {ROBOT: spec}
    config.model.image_tokenizers = (dict(camera="primary"), dict(camera="side"))
    config.data.frame.cameras = dict(
        primary=dict(size=None, augment=None), side=dict(size=(32, 32), augment=None)
    )
    two_step_run(config, stats_dir=str(setup["root"] / "stats"), shuffle_buffer=16)
    return config


@pytest.mark.slow
def test_octos_finetuning_example_runs_from_an_imported_checkpoint(setup):
    import finetune

    pretrained = OctoModel.load_pretrained(setup["pretrained"])
    before = flat_params(nnx_params(pretrained))
    tables = []
    workdir = str(setup["root"] / "finetune")
    result, report = finetune.main(octo_example_config(setup), workdir, echo=tables.append)
    assert result.final_step == 2 and np.isfinite(result.last_metrics["loss"])
    assert tables and "image_tokenizers/side" in tables[0]  # the reuse table was printed
    assert any(p.startswith("image_tokenizers/side/") for p in report.new)
    # Octo's per-dimension proprio tokens: a new projection and positions, no tokenizer weights
    assert {"proprio_projection/kernel", "proprio_position"} <= set(report.new)
    assert any(p.startswith("head/map_head/") for p in report.new)  # a new kind of head
    assert any(p.startswith("image_tokenizers/wrist/") for p in report.dropped)
    for kept in ("transformer/transformer/blocks/1/mlp/fc1/kernel", "language_projection/kernel"):
        assert kept in report.reused
    after = flat_params(result.state.params)
    t5 = [p for p in before if p.startswith("language_encoder/")]
    assert t5 and all(np.array_equal(after[p], before[p]) for p in t5)  # T5 frozen
    moved = "transformer/transformer/blocks/1/mlp/fc1/kernel"
    assert not np.array_equal(after[moved], before[moved])  # the rest trains

    model = OctoModel.load_pretrained(os.path.join(workdir, "checkpoints"))
    assert model.config.head.kind == "l1" and model.config.action_horizon == H
    assert model.config.repeat_task_tokens  # Octo's behaviours carry over...
    assert model.config.frame_resize == "linear"  # ...its frames are this pipeline's
    b = 2
    observation = {  # Octo's form: no pad_mask_dict, no proprio_pad_mask (all valid)
        "image_primary": np.full((b, 2, 32, 32, 3), 90, np.uint8),
        "image_side": np.full((b, 2, 32, 32, 3), 90, np.uint8),
        "proprio": np.zeros((b, 2, A), np.float32),
        "timestep_pad_mask": np.ones((b, 2), bool),
    }
    tasks = model.create_tasks(texts=["fold the towel"] * b)
    actions = model.sample_actions(
        observation, tasks, model.dataset_statistics[ROBOT]["action"], rng=jax.random.key(0)
    )
    assert actions.shape == (b, H, A) and np.isfinite(actions).all()
    mean = np.asarray(model.dataset_statistics[ROBOT]["action"]["mean"])
    np.testing.assert_allclose(mean, OFFSET, atol=0.5)


def nnx_params(model: OctoModel):
    from flax import nnx

    return nnx.state(model.module, nnx.Param).to_pure_dict()

"""Fine-tuning: LoRA numerics, parameter reuse, frozen patterns, base-referencing checkpoints,
config validation, and end to end (pretrain, fine-tune in every mode to a robot with another
action dim and camera set, load each result in a fresh process)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import finetune as finetune_configs
from octo_like.config.typed import ConfigError
from octo_like.model.base_checkpoint import BaseReference, flat_params
from octo_like.model.checkpoint_layout import model_items
from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LoraConfig,
    ModelConfig,
    ProprioTokenizerConfig,
)
from octo_like.model.octo_model import OctoModel, merge_lora
from octo_like.training.finetuning.finetune import (
    frozen_by_mode,
    prefix_patterns,
    reusable_from_scratch,
    reuse_parameters,
)
from octo_like.training.finetuning.finetune_config import parse_finetune_config
from octo_like.training.optim import masks
from octo_like.training.optim.optimizer import OptimizerConfig, make_optimizer
from octo_like.training.run.step import TrainState, make_steps
from tests.training.robots import two_step_run, write_robot_dataset
from tests.xla_flags import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- a tiny model, no data
def tiny_config(**overrides) -> ModelConfig:
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(ImageTokenizerConfig("primary", encoder="patch16", num_features=32),),
        head=HeadConfig("diffusion", {"hidden_dim": 32, "num_blocks": 1}),
        action_dim=3,
    )
    return dataclasses.replace(config, **overrides)


def tiny_batch(action_dim: int = 3, proprio: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b, w, h = 2, 2, 4
    observation = {
        "image_primary": rng.integers(0, 255, (b, w, 32, 32, 3), dtype=np.uint8),
        "timestep_pad_mask": np.ones((b, w), bool),
        "pad_mask_dict": {"image_primary": np.ones((b, w), bool)},
    }
    if proprio:
        observation["proprio"] = rng.normal(size=(b, w, proprio)).astype(np.float32)
        observation["proprio_pad_mask"] = np.ones((b, w, proprio), bool)
        observation["pad_mask_dict"]["proprio"] = np.ones((b, w), bool)
    return {
        "observation": observation,
        "task": {"pad_mask_dict": {}},
        "action": rng.normal(size=(b, w, h, action_dim)).astype(np.float32),
        "action_pad_mask": np.ones((b, w, h, action_dim), bool),
    }


def tiny_model(config: ModelConfig, batch: dict, seed: int = 0) -> OctoModel:
    return OctoModel.from_config(config, batch, jax.random.key(seed))


def params_of(model: OctoModel) -> nnx.State:
    return nnx.state(model.module, nnx.Param)


def adapt(base: OctoModel, config: ModelConfig, batch: dict, seed: int = 1):
    """A new model from `config`, with every matching parameter of `base` copied in."""
    model = tiny_model(config, batch, seed)
    state = params_of(model)
    merged, report = reuse_parameters(state, params_of(base))
    nnx.replace_by_pure_dict(state, merged)
    nnx.update(model.module, state)
    return model, report


def readouts(model: OctoModel, batch: dict) -> np.ndarray:
    return np.asarray(model.module.readouts(batch["observation"], batch["task"], train=False))


def test_lora_starts_equal_to_its_base_and_merges_back():
    batch = tiny_batch()
    base = tiny_model(tiny_config(), batch)
    lora, report = adapt(base, tiny_config(lora=LoraConfig(rank=2, alpha=4.0)), batch)
    assert not report.mismatched and not report.dropped
    assert set(report.new) == {p for p in flat_params(params_of(lora)) if "/lora_" in p}
    assert len(report.new) == 2 * 6  # query, key, value, out, fc1, fc2 of the one block
    np.testing.assert_array_equal(readouts(lora, batch), readouts(base, batch))
    rng = jax.random.key(3)
    np.testing.assert_array_equal(
        lora.sample_actions(batch["observation"], batch["task"], rng=rng),
        base.sample_actions(batch["observation"], batch["task"], rng=rng),
    )

    for layer in (lora.module.transformer.transformer.blocks[0].attention.query,
                  lora.module.transformer.transformer.blocks[0].mlp.fc2):  # fmt: skip
        layer.lora_b.value = jax.random.normal(jax.random.key(4), layer.lora_b.value.shape)
    adapted = readouts(lora, batch)
    assert np.abs(adapted - readouts(base, batch)).max() > 1e-3
    merged = merge_lora(lora)
    assert merged.config.lora is None
    assert not any("lora_" in p for p in flat_params(params_of(merged)))
    np.testing.assert_allclose(readouts(merged, batch), adapted, rtol=1e-4, atol=1e-4)
    assert lora.config.lora is not None  # merging copies; the adapted model is unchanged


def test_lora_mode_updates_only_the_adapters():
    batch = tiny_batch()
    base = tiny_model(tiny_config(), batch)
    model, report = adapt(base, tiny_config(lora=LoraConfig(rank=2)), batch)
    graphdef, params, rest = nnx.split(model.module, nnx.Param, ...)

    # With B = 0 the loss is flat in A: only B gets a gradient at the start.
    def loss(params):
        return nnx.merge(graphdef, params, rest).loss(batch, rng=jax.random.key(0))[0]

    grads = flat_params(jax.grad(loss)(params))
    adapters = sorted(p for p in grads if "/lora_" in p)
    assert all(not np.any(grads[p]) for p in adapters if p.endswith("lora_a"))
    assert all(np.any(grads[p]) for p in adapters if p.endswith("lora_b"))

    frozen = frozen_by_mode(report, "lora")
    assert frozen == set(report.reused)  # every pretrained weight; adapters are all new
    patterns = prefix_patterns(frozen, grads)
    config = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, frozen=patterns)
    optimizer, counts = make_optimizer(config, params, 10)
    assert counts["trainable_parameters"] == sum(np.size(grads[p]) for p in adapters)
    mask = masks.regex_mask(params, config.frozen, name="frozen")
    step, _ = make_steps(graphdef, rest, optimizer, lambda s: 0.0, jax.random.key(1), mask)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    before = flat_params(params)
    step = jax.jit(step)
    state, metrics = step(state, batch)
    state, metrics = step(state, batch)
    after = flat_params(state.params)
    for path in before:
        changed = not np.array_equal(before[path], after[path])
        assert changed == (path in adapters), path
    assert np.isfinite(metrics["loss"])


def test_reuse_parameters_sorts_every_parameter_by_fate():
    new = {"a": {"kernel": jnp.zeros((2, 3))}, "b": jnp.zeros((4,)), "c": jnp.zeros((5,))}
    old = {"a": {"kernel": jnp.ones((2, 3))}, "b": jnp.ones((6,)), "d": jnp.ones((1,))}
    merged, report = reuse_parameters(new, old)
    assert dict(report.reused) == {"a/kernel": (2, 3)}
    assert dict(report.mismatched) == {"b": ((6,), (4,))}
    assert dict(report.new) == {"c": (5,)}
    assert dict(report.dropped) == {"d": (1,)}
    np.testing.assert_array_equal(merged["a"]["kernel"], np.ones((2, 3)))
    np.testing.assert_array_equal(merged["b"], np.zeros(4))  # fresh: the new shape's init
    table = report.table()
    assert "b: [6] -> [4]" in table and "dropped" in table
    assert report.counts()["reused"] == (1, 6)


def test_reuse_table_of_a_changed_head_and_camera_set():
    base = tiny_model(tiny_config(), tiny_batch())
    batch = tiny_batch(action_dim=5, proprio=4)
    config = tiny_config(
        image_tokenizers=(ImageTokenizerConfig("primary", encoder="patch16", num_features=32),),
        proprio=ProprioTokenizerConfig(num_features=16),
        action_dim=5,
    )
    _, report = adapt(base, config, batch)
    assert {p.split("/")[0] for p in report.new} == {
        "proprio_tokenizer",
        "proprio_projection",
        "proprio_position",
    }
    assert set(report.mismatched) == {
        "head/network/proj_in/kernel",
        "head/network/proj_out/kernel",
        "head/network/proj_out/bias",
    }
    assert report.mismatched["head/network/proj_out/bias"] == ((12,), (20,))  # H * A
    assert "transformer/transformer/blocks/0/attention/query/kernel" in report.reused
    head_only = frozen_by_mode(report, "head_only")
    assert head_only and not any(p.startswith("head/") for p in head_only)
    mlp_only = frozen_by_mode(report, "head_mlp_only")
    assert "head/network/time_embedding/hidden/kernel" in mlp_only
    assert "head/network/blocks/0/up/kernel" not in mlp_only
    assert frozen_by_mode(report, "full") == set()
    with pytest.raises(ConfigError, match="unknown fine-tuning mode"):
        frozen_by_mode(report, "headonly")


def test_prefix_patterns_match_exactly_the_selection():
    paths = ["a/x/k", "a/x/b", "a/y/k", "b/k", "c"]
    selected = {"a/x/k", "a/x/b", "b/k"}
    patterns = prefix_patterns(selected, paths)
    assert patterns == (r"^a/x(/|$)", r"^b(/|$)")
    hits = {p for p in paths if any(re.search(r, p) for r in patterns)}
    assert hits == selected
    assert prefix_patterns(set(), paths) == ()


def test_a_frozen_or_lr_pattern_that_matches_nothing_is_a_config_error():
    params = params_of(tiny_model(tiny_config(), tiny_batch()))
    with pytest.raises(ConfigError, match=r"'\^transformr/'.*\n.*head/network"):
        make_optimizer(OptimizerConfig(warmup_steps=1, frozen=("^transformr/",)), params, 10)
    with pytest.raises(ConfigError, match="lr_multipliers: pattern 'nothing'"):
        make_optimizer(OptimizerConfig(warmup_steps=1, lr_multipliers={"nothing": 0.1}), params, 10)


# ---------------------------------------------------------------- base-referencing checkpoints
def save_delta(model: OctoModel, directory: str, reference: BaseReference) -> None:
    with ocp.CheckpointManager(directory) as manager:
        items = model_items(
            params_of(model), model.config.to_dict(), {}, model.input_spec, reference
        )
        manager.save(0, args=ocp.args.Composite(**items))
        manager.wait_until_finished()


def test_a_checkpoint_referencing_its_base_loads_and_fails_clearly(tmp_path):
    batch = tiny_batch()
    base = tiny_model(tiny_config(), batch)
    base_dir = str(tmp_path / "base")
    base.save_pretrained(0, base_dir)
    model, report = adapt(base, tiny_config(lora=LoraConfig(rank=2)), batch)
    reference = BaseReference.create(base_dir, 0, params_of(base), report.reused)
    delta_dir = str(tmp_path / "delta")
    save_delta(model, delta_dir, reference)

    loaded = OctoModel.load_pretrained(delta_dir)
    expected, got = flat_params(params_of(model)), flat_params(params_of(loaded))
    assert expected.keys() == got.keys()
    for path in expected:
        np.testing.assert_array_equal(expected[path], got[path])
    size = lambda d: sum(f.stat().st_size for f in pathlib.Path(d).rglob("*") if f.is_file())
    assert size(f"{delta_dir}/0/params") < size(f"{base_dir}/0/params") / 4

    shutil.move(base_dir, str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match=f"base checkpoint {re.escape(base_dir)}"):
        OctoModel.load_pretrained(delta_dir)
    changed = tiny_model(tiny_config(), batch, seed=7)  # same shapes, other values
    changed.save_pretrained(0, base_dir)
    with pytest.raises(ValueError, match="has changed since this checkpoint was made"):
        OctoModel.load_pretrained(delta_dir)


# ---------------------------------------------------------------- config validation
def test_finetune_config_rejects_typos_and_bad_pretrained_paths(tmp_path):
    with pytest.raises(AttributeError):
        finetune_configs.get_config("lora,language").optimizer.learning_rte = 1.0  # locked
    with pytest.raises(ValueError, match="unknown fine-tuning mode"):
        finetune_configs.get_config("loraa,language")
    config = finetune_configs.get_config("lora,language").to_dict()
    config["pretrained_pth"] = "x"
    with pytest.raises(ConfigError, match="'pretrained_pth' \\(did you mean 'pretrained_path'"):
        parse_finetune_config(config, str(tmp_path))
    config = finetune_configs.get_config("lora,language").to_dict()
    config["dataset"].update(name="new_robot", location=str(tmp_path))
    with pytest.raises(ConfigError, match="pretrained_path is empty"):
        parse_finetune_config(config, str(tmp_path))
    config["pretrained_path"] = str(tmp_path)
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        parse_finetune_config(config, str(tmp_path))

    tiny_model(tiny_config(), tiny_batch()).save_pretrained(0, str(tmp_path / "pre"))
    config["pretrained_path"] = str(tmp_path / "pre")
    config["model"]["transformr"] = "tiny"
    with pytest.raises(ConfigError, match="transformr"):
        parse_finetune_config(config, str(tmp_path))
    del config["model"]["transformr"]
    config["optimizer"]["learning_rte"] = 1e-3
    with pytest.raises(ConfigError, match="learning_rte.*did you mean 'learning_rate'"):
        parse_finetune_config(config, str(tmp_path))


# ---------------------------------------------------------------- end to end
NEW_ROBOT = "new_robot"
OFFSET = np.array([10.0, -20.0, 30.0, 5.0], np.float32)  # far from the pretraining data's units
MODES = (("full", "language"), ("head_only", "multimodal"), ("head_mlp_only", "goal"),
         ("lora", "language"))  # fmt: skip


def write_new_robot(data_dir: str) -> str:
    """Cameras `front` (-> primary, 64x64) and `side` (a camera the pretrained model never saw),
    3-dim joint proprio, 5-dim actions around OFFSET plus a binary gripper."""
    return write_robot_dataset(
        data_dir, NEW_ROBOT, cameras={"front": (64, 64), "side": (32, 32)}, proprio_dim=3,
        offset=OFFSET, gripper=True, episodes={"train": 6, "val": 2}, episode_length=(12, 20),
    )  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    """configs/pretrain.py:debug (patch encoders, 2 steps) and the new robot's dataset."""
    import train
    from configs import pretrain

    root = tmp_path_factory.mktemp("finetune_e2e")
    config = pretrain.get_config("debug")
    config.data_dir = str(root / "synthetic")
    config.data.statistics_cache_dir = str(root / "stats")
    config.tensorboard = False
    config.val_split = ""
    config.num_steps = 2
    config.model.image_tokenizers = tuple(
        {**t, "encoder": "patch16"} for t in config.model.image_tokenizers
    )
    train.main(config, str(root / "pretrain"))
    return {
        "root": root,
        "checkpoints": str(root / "pretrain" / "checkpoints"),
        "new_data": write_new_robot(str(root / "new_data")),
    }


def finetune_config(pretrained: dict, mode: str, task: str):
    config = finetune_configs.get_config(f"{mode},{task}")
    config.pretrained_path = pretrained["checkpoints"]
    config.dataset.name = NEW_ROBOT
    config.dataset.location = pretrained["new_data"]
    config.data.extra_specs = {
        NEW_ROBOT: dict(
            image_keys=dict(primary="front", side="side"),
            proprio_key="joints",
            action_encoding="custom",
            action_normalization_mask=(True,) * 4 + (False,),
            standardize="identity",
        )
    }
    config.data.frame.cameras = dict(
        primary=dict(size=None, augment=None), side=dict(size=(32, 32), augment=None)
    )
    config.model.image_tokenizers = (dict(camera="primary"), dict(camera="side"))
    config.model.proprio = dict(mode="linear", num_features=16)
    config.model.action_dim = 5
    two_step_run(config, stats_dir=str(pretrained["root"] / "stats"), shuffle_buffer=64)
    return config


LOAD_AND_ACT = """
import json, sys
import jax, numpy as np
from octo_like.model.octo_model import OctoModel

b, out = 3, {}
for directory in sys.argv[1:]:
    model = OctoModel.load_pretrained(directory)
    ones = lambda *shape: np.ones(shape, bool)
    observation = {
        "image_primary": np.full((b, 2, 64, 64, 3), 90, np.uint8),
        "image_side": np.full((b, 2, 32, 32, 3), 90, np.uint8),
        "proprio": np.zeros((b, 2, 3), np.float32), "proprio_pad_mask": ones(b, 2, 3),
        "timestep_pad_mask": ones(b, 2),
        "pad_mask_dict": {"image_primary": ones(b, 2), "image_side": ones(b, 2),
                          "proprio": ones(b, 2)},
    }
    if model.config.language.encoder == "none":
        tasks = model.create_tasks(goals={"primary": observation["image_primary"][:, -1]})
    else:
        tasks = model.create_tasks(texts=["open the drawer"] * b)
    statistics = model.dataset_statistics["new_robot"]["action"]  # robot units (Octo's call)
    actions = model.sample_actions(observation, tasks, statistics, rng=jax.random.key(0))
    out[directory] = {"actions": actions.tolist(), "lora": model.config.lora is not None,
                      "statistics": model.dataset_statistics}
print("RESULT " + json.dumps(out))
"""


def directory_size(path: str) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


@pytest.mark.slow
def test_finetune_in_every_mode_to_a_new_robot_then_load_in_a_fresh_process(pretrained):
    import finetune

    base = flat_params(params_of(OctoModel.load_pretrained(pretrained["checkpoints"])))
    checkpoints, tables = {}, {}
    for mode, task in MODES:
        config = finetune_config(pretrained, mode, task)
        workdir = str(pretrained["root"] / f"ft_{mode}")
        if mode == "lora":  # resume works with adapters and a base-referencing checkpoint
            first, _ = finetune.main(config, workdir, stop_at_step=1)
            assert first.final_step == 1
        result, report = finetune.main(
            config, workdir, echo=lambda t, m=mode: tables.setdefault(m, t)
        )
        assert result.final_step == 2 and np.isfinite(result.last_metrics["loss"])
        assert result.start_step == (1 if mode == "lora" else 0)
        checkpoints[mode] = os.path.join(workdir, "checkpoints")

        assert set(report.mismatched) == {
            "head/network/proj_in/kernel", "head/network/proj_out/kernel",
            "head/network/proj_out/bias",
        }  # fmt: skip
        assert any(p.startswith("image_tokenizers/side/") for p in report.new)
        assert any(p.startswith("proprio_tokenizer/") for p in report.new)
        assert any(p.startswith("image_tokenizers/wrist/") for p in report.dropped)
        assert any(p.startswith("language_encoder/") for p in report.dropped) == (task == "goal")
        assert "transformer/transformer/blocks/0/mlp/fc1/kernel" in report.reused
        # Frozen reused weights are exactly the pretrained ones; trained ones moved.
        final = flat_params(result.state.params)
        kernel = "transformer/transformer/blocks/0/mlp/fc1/kernel"
        assert np.array_equal(final[kernel], base[kernel]) == (mode != "full"), mode
        time_kernel = "head/network/time_embedding/hidden/kernel"
        assert np.array_equal(final[time_kernel], base[time_kernel]) == (
            mode in ("head_mlp_only", "lora")
        ), mode
        assert not np.array_equal(final["head/network/proj_out/kernel"], 0)
    assert "shape-mismatched" in tables["lora"] and "image_tokenizers/side" in tables["lora"]

    command = [sys.executable, "-c", LOAD_AND_ACT, *checkpoints.values()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags()}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULT ", 1)[1])
    for mode, directory in checkpoints.items():
        loaded = results[directory]
        actions = np.asarray(loaded["actions"])
        assert actions.shape == (3, 4, 5), mode
        # Unnormalized with the NEW robot's statistics, saved in the checkpoint.
        assert list(loaded["statistics"]) == [NEW_ROBOT]
        mean = loaded["statistics"][NEW_ROBOT]["statistics"]["action"]["mean"]
        np.testing.assert_allclose(mean[:4], OFFSET, atol=0.5)
        assert np.abs(actions[..., :4] - OFFSET).max() < 4.0, (mode, actions[0, 0])
        assert loaded["lora"] == (mode == "lora")

    step = lambda mode: os.path.join(checkpoints[mode], "2")
    assert os.path.isdir(os.path.join(step("lora"), "base_params"))
    # Smaller as a whole (the resume state still holds every weight, so not by a fixed ratio)...
    assert directory_size(step("lora")) < directory_size(step("full"))
    # ...and its params item, what load_pretrained reads, holds adapters and new weights only
    # (here mostly the new camera's).
    assert (
        directory_size(os.path.join(step("lora"), "params"))
        < directory_size(os.path.join(step("full"), "params")) / 2
    )


def test_scratch_takes_only_a_frozen_t5_from_the_checkpoint():
    params = {"language_encoder": {"embed": np.ones(3)}, "head": {"proj": {"kernel": np.ones(2)}}}
    assert flat_params(reusable_from_scratch(params, same_t5=True)) == {
        "language_encoder/embed": params["language_encoder"]["embed"]
    }
    assert reusable_from_scratch(params, same_t5=False) == {}


def test_scratch_mode_trains_the_same_model_from_a_fresh_initialization(pretrained):
    """The transfer benchmark's baseline: the fine-tuning data path and model, no weight reused
    (a reused weight would sit within 2 Adam steps of the pretrained one)."""
    import finetune

    base = flat_params(params_of(OctoModel.load_pretrained(pretrained["checkpoints"])))
    config = finetune_config(pretrained, "scratch", "language")
    config.seed = 1  # the pretraining ran with seed 0: another draw of every initializer
    result, report = finetune.main(config, str(pretrained["root"] / "ft_scratch"))
    assert result.final_step == 2 and np.isfinite(result.last_metrics["loss"])
    final = flat_params(result.state.params)
    assert not report.reused and not report.mismatched and set(report.new) == set(final)
    kernels = [p for p in final if p.endswith("kernel") and p in base]
    assert len(kernels) > 10 and any(p.startswith("language_encoder/") for p in kernels)
    for path in kernels:
        if np.shape(base[path]) == np.shape(final[path]):
            assert np.abs(np.asarray(final[path]) - np.asarray(base[path])).max() > 1e-2, path


def test_command_line_sets_the_unset_model_overrides(tmp_path):
    """Fields left unset ("as pretrained") are typed placeholders, so flags can set them: the
    run gets past flag parsing and stops at the first config check (no dataset given)."""
    repo = pathlib.Path(finetune_configs.__file__).resolve().parents[1]
    missing = tmp_path / "no_such_checkpoint"
    result = subprocess.run(
        [
            sys.executable, str(repo / "finetune.py"), "--config",
            f"{repo}/configs/finetune.py:lora,language", f"--workdir={tmp_path / 'run'}",
            f"--config.pretrained_path={missing}", "--config.model.action_dim=5",
            "--config.model.head.kind=l1", "--config.model.transformer=tiny",
            "--config.model.remat=full", "--config.model.head.readout_tokens=2",
        ],
        capture_output=True, text=True, timeout=300, cwd=repo,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Flags parsing error" not in result.stderr
    assert "--config.dataset.name=" in result.stderr.splitlines()[-1]
    assert finetune_configs.get_config("full,goal").model.action_dim is None

"""The user-facing model object: creation, tasks, sampling, input checks, save/load round trip."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
    ProprioTokenizerConfig,
)
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.model.octo_module import OctoModule
from octo_like.normalization import ArrayStatistics

B, W, H, A, P = 2, 2, 4, 7, 5


def make_batch(rng: np.random.Generator, batch: int = B) -> dict:
    ones = lambda *shape: np.ones(shape, bool)
    return {
        "observation": {
            "image_primary": rng.integers(0, 255, (batch, W, 32, 32, 3), dtype=np.uint8),
            "image_wrist": rng.integers(0, 255, (batch, W, 16, 16, 3), dtype=np.uint8),
            "proprio": rng.normal(size=(batch, W, P)).astype(np.float32),
            "proprio_pad_mask": ones(batch, W, P),
            "timestep": np.tile(np.arange(W, dtype=np.int32), (batch, 1)),
            "timestep_pad_mask": ones(batch, W),
            "pad_mask_dict": {
                "image_primary": ones(batch, W),
                "image_wrist": ones(batch, W),
                "proprio": ones(batch, W),
            },
        },
        "task": {
            "language_instruction": np.array([b"open the drawer"] * batch, dtype=object),
            "image_primary": rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8),
            "pad_mask_dict": {"language_instruction": ones(batch), "image_primary": ones(batch)},
        },
        "action": rng.normal(size=(batch, W, H, A)).astype(np.float32),
        "action_pad_mask": ones(batch, W, H, A),
    }


@pytest.fixture(scope="module")
def language_dir(tmp_path_factory) -> str:
    return write_tiny_t5_checkpoint(str(tmp_path_factory.mktemp("t5")))


def tiny_config(language_dir: str, encoder: str = "small") -> ModelConfig:
    return ModelConfig(
        transformer="dummy",
        image_tokenizers=(
            ImageTokenizerConfig("primary", num_features=32, goal_fusion=True),
            ImageTokenizerConfig("wrist", encoder="patch16", num_features=32),
        ),
        proprio=ProprioTokenizerConfig(num_features=16),
        language=LanguageConfig(encoder=encoder, checkpoint_dir=language_dir, small_width=32),
        goal_image_cameras=("primary",),
        window=W,
        action_horizon=H,
        action_dim=A,
        head=HeadConfig("diffusion", {"hidden_dim": 32, "num_blocks": 1, "diffusion_steps": 5}),
    )


def statistics_entry() -> dict:
    stats = ArrayStatistics(
        mean=np.full(A, 1.0, np.float32),
        std=np.full(A, 2.0, np.float32),
        min=np.full(A, -5.0, np.float32),
        max=np.full(A, 5.0, np.float32),
        p01=np.full(A, -4.0, np.float32),
        p99=np.full(A, 4.0, np.float32),
    )
    return action_statistics_entry(
        {"action": stats.to_dict(), "proprio": None, "num_transitions": 1, "num_trajectories": 1},
        "normal",
        (True,) * 6 + (False,),
    )


@pytest.fixture(scope="module")
def model(language_dir) -> OctoModel:
    batch = make_batch(np.random.default_rng(0))
    return OctoModel.from_config(
        tiny_config(language_dir), batch, jax.random.key(0), {"toy": statistics_entry()}
    )


def test_sample_actions_shapes_and_unnormalization(model):
    batch = make_batch(np.random.default_rng(1))
    tasks = model.create_tasks(texts=["open the drawer", "close it"])
    tasks["image_primary"] = batch["task"]["image_primary"]
    raw = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(0))
    assert raw.shape == (B, H, A) and raw.dtype == np.float32
    entry = model.dataset_statistics["toy"]
    actions = model.sample_actions(batch["observation"], tasks, entry, rng=jax.random.key(0))
    # NORMAL with mean 1, std 2 on the first six dims; the gripper dim is left as predicted.
    np.testing.assert_allclose(actions[..., :6], raw[..., :6] * 2 + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actions[..., 6], raw[..., 6])
    many = model.sample_actions(
        batch["observation"], tasks, sample_shape=(3,), rng=jax.random.key(0)
    )
    assert many.shape == (3, B, H, A)
    again = model.sample_actions(batch["observation"], tasks, {}, rng=jax.random.key(0))
    np.testing.assert_array_equal(raw, again)


def test_padded_action_dims_are_dropped_in_robot_units(model):
    """A model padded to max_action_dim returns only the dataset's dims, unnormalized."""
    batch = make_batch(np.random.default_rng(1))
    tasks = model.create_tasks(texts=["open the drawer", "close it"])
    raw = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(0))
    five = statistics_entry()
    action = five["statistics"]["action"]
    five["statistics"]["action"] = {
        k: v[:5] if isinstance(v, list) and len(v) == A else v for k, v in action.items()
    }
    five["action_normalization_mask"] = [True] * 4 + [False]
    actions = model.sample_actions(batch["observation"], tasks, five, rng=jax.random.key(0))
    assert actions.shape == (B, H, 5)
    np.testing.assert_allclose(actions[..., :4], raw[..., :4] * 2 + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actions[..., 4], raw[..., 4])


def test_create_tasks_masks_missing_modalities(model):
    tasks = model.create_tasks(texts=["pick", ""])
    assert tasks["pad_mask_dict"]["language_instruction"].tolist() == [True, False]
    assert not tasks["language_mask"][1].any() and tasks["language_mask"][0].any()
    assert not tasks["pad_mask_dict"]["image_primary"].any()
    goals = model.create_tasks(goals={"primary": np.zeros((2, 32, 32, 3), np.uint8)})
    assert goals["pad_mask_dict"]["image_primary"].all()
    assert not goals["pad_mask_dict"]["language_instruction"].any()


def test_mismatched_observation_names_key_and_shape(model):
    batch = make_batch(np.random.default_rng(2))
    tasks = model.create_tasks(texts=["a", "b"])
    observation = dict(batch["observation"])
    observation["image_primary"] = observation["image_primary"][:, :, :16]
    with pytest.raises(ValueError, match=r"image_primary.*expected \[batch, 2, 32, 32, 3\]"):
        model.sample_actions(observation, tasks, rng=jax.random.key(0))
    del observation["image_primary"]
    with pytest.raises(ValueError, match="missing 'image_primary'"):
        model.sample_actions(observation, tasks, rng=jax.random.key(0))


def test_loss_is_finite_and_depends_on_actions(model):
    batch = make_batch(np.random.default_rng(3))
    batch["task"] = model.create_tasks(texts=["open the drawer"] * B) | {
        "image_primary": batch["task"]["image_primary"]
    }
    batch["task"]["pad_mask_dict"]["image_primary"] = np.ones(B, bool)
    del batch["task"]["language_instruction"]  # strings stay on the host
    loss_fn = nnx.jit(lambda module, batch, rng: module.loss(batch, rng=rng, train=False))
    loss, metrics = loss_fn(model.module, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and "mse" in metrics
    masked = dict(batch, action_pad_mask=np.zeros_like(batch["action_pad_mask"]))
    zero, _ = loss_fn(model.module, masked, jax.random.key(0))
    assert float(zero) == 0.0


def test_save_and_load_round_trip(model, tmp_path):
    checkpoint = str(tmp_path / "checkpoints")
    model.save_pretrained(7, checkpoint)
    assert os.path.isdir(os.path.join(checkpoint, "7"))
    loaded = OctoModel.load_pretrained(checkpoint)
    before = nnx.state(model.module, nnx.Param).to_pure_dict()
    after = nnx.state(loaded.module, nnx.Param).to_pure_dict()
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert loaded.config.language.checkpoint_dir.endswith("language_assets")
    assert dataclasses.replace(loaded.config, language=model.config.language) == model.config
    assert loaded.dataset_statistics == json.loads(json.dumps(model.dataset_statistics))
    batch = make_batch(np.random.default_rng(4))
    tasks = model.create_tasks(texts=["open the drawer", "x"])
    a = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(1))
    b = loaded.sample_actions(
        batch["observation"],
        loaded.create_tasks(texts=["open the drawer", "x"]),
        rng=jax.random.key(1),
    )
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert "image_primary" in loaded.get_pretty_spec()


def test_load_pretrained_restores_into_given_shardings(model, tmp_path):
    """Parameters land directly in a caller's layout (e.g. FSDP over the run's mesh)."""
    from octo_like.training.parallel import sharding

    checkpoint = str(tmp_path / "checkpoints")
    model.save_pretrained(3, checkpoint)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=-1))
    rules = sharding.MeshConfig(data=1, fsdp=-1, fsdp_min_size_mb=0.0)
    layout = lambda abstract: sharding.parameter_shardings(abstract, mesh, rules)
    loaded = OctoModel.load_pretrained(checkpoint, sharding=layout)
    before = nnx.state(model.module, nnx.Param).to_pure_dict()
    after = nnx.state(loaded.module, nnx.Param).to_pure_dict()
    wanted = layout(after)
    split = 0
    for x, y, want in zip(
        jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(wanted), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert y.sharding == want
        split += not y.sharding.is_fully_replicated
    assert split > 10  # most arrays are split over the 8 devices
    replicated = OctoModel.load_pretrained(checkpoint, sharding=sharding.replicated(mesh))
    leaf = jax.tree.leaves(nnx.state(replicated.module, nnx.Param).to_pure_dict())[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        OctoModel.load_pretrained(str(tmp_path / "empty"))


def test_pretrained_t5_weights_are_loaded(language_dir):
    from octo_like.model.language import load_t5_encoder

    batch = make_batch(np.random.default_rng(5))
    model = OctoModel.from_config(tiny_config(language_dir, "t5"), batch, jax.random.key(0))
    reference, _ = load_t5_encoder(language_dir)
    tasks = model.create_tasks(texts=["open the drawer", "push the puck"])
    ours = model.module.language_encoder(tasks["language_tokens"], tasks["language_mask"])
    theirs = reference(tasks["language_tokens"], tasks["language_mask"])
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6)


def octo_parameter_count(size: str, tmp_path) -> int:
    """Trainable parameters (frozen T5-base excluded) in Octo's published configuration."""
    t5_dir = tmp_path / size
    t5_dir.mkdir()
    small = write_tiny_t5_checkpoint(str(tmp_path / f"{size}_spm"))
    with open(os.path.join(small, "spiece.model"), "rb") as f:
        (t5_dir / "spiece.model").write_bytes(f.read())
    t5_base = {
        "model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072,
        "num_layers": 12, "num_heads": 12, "feed_forward_proj": "relu",
    }  # fmt: skip
    (t5_dir / "config.json").write_text(json.dumps(t5_base))
    config = ModelConfig(
        transformer=size,
        image_tokenizers=(
            ImageTokenizerConfig("primary", goal_fusion=True),
            ImageTokenizerConfig("wrist", goal_fusion=True),
        ),
        language=LanguageConfig(encoder="t5", checkpoint_dir=str(t5_dir)),
    )
    spec = {
        "observation": {
            "image_primary": {"shape": [2, 256, 256, 3], "dtype": "uint8"},
            "image_wrist": {"shape": [2, 128, 128, 3], "dtype": "uint8"},
        },
        "task": {
            "image_primary": {"shape": [256, 256, 3], "dtype": "uint8"},
            "image_wrist": {"shape": [128, 128, 3], "dtype": "uint8"},
        },
    }
    module = nnx.eval_shape(lambda: OctoModule(config, spec, 1000, rngs=nnx.Rngs(0)))
    total = sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
    language = sum(p.size for p in jax.tree.leaves(nnx.state(module.language_encoder, nnx.Param)))
    return total - language


@pytest.mark.parametrize(("size", "published"), [("small", 27e6), ("base", 93e6)])
def test_parameter_counts_match_octo(size, published, tmp_path):
    count = octo_parameter_count(size, tmp_path)
    print(f"octo-{size}: {count / 1e6:.2f}M trainable parameters (published {published / 1e6}M)")
    assert abs(count - published) / published < 0.05, count


def test_octo_model_is_exported_at_package_level():
    import octo_like

    assert octo_like.OctoModel is OctoModel


def test_patch_size_sets_each_cameras_token_count():
    """primary at 64 px with 8 px patches: 64 tokens a step; wrist keeps 16 px patches: 4."""
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(
            ImageTokenizerConfig("primary", num_features=32, goal_fusion=True, patch_size=8),
            ImageTokenizerConfig("wrist", num_features=32),
        ),
        language=LanguageConfig(encoder="none"),
        window=2,
        action_horizon=H,
        action_dim=A,
        head=HeadConfig("mse"),
    )
    spec = {
        "observation": {
            "image_primary": {"shape": [2, 64, 64, 3], "dtype": "uint8"},
            "image_wrist": {"shape": [2, 32, 32, 3], "dtype": "uint8"},
        },
        "task": {"image_primary": {"shape": [64, 64, 3], "dtype": "uint8"}},
    }
    module = nnx.eval_shape(lambda: OctoModule(config, spec, 1000, rngs=nnx.Rngs(0)))
    tokens = {s.name: s.num_tokens for s in module.group_specs}
    assert tokens["obs_primary"] == 64 and tokens["obs_wrist"] == 4
    assert module.image_positions["primary"].value.shape[1] == 64
    assert len(module.image_tokenizers["primary"].encoder.convs) == 3
    with pytest.raises(ValueError, match="'primary': patch_size must be one of"):
        ImageTokenizerConfig("primary", patch_size=10)


def test_keypoints_add_tokens_per_camera_and_survive_the_config_round_trip():
    """primary at 64 px with 8 keypoints: 16 patches + 8 keypoints a step; a config saved
    before the option existed (no `keypoints` key) loads with none."""
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(ImageTokenizerConfig("primary", num_features=32, keypoints=8),),
        language=LanguageConfig(encoder="none"),
        window=2,
        action_horizon=H,
        action_dim=A,
        head=HeadConfig("mse"),
    )
    spec = {"observation": {"image_primary": {"shape": [2, 64, 64, 3], "dtype": "uint8"}}}
    spec["task"] = {}
    module = nnx.eval_shape(lambda: OctoModule(config, spec, 1000, rngs=nnx.Rngs(0)))
    tokens = {s.name: s.num_tokens for s in module.group_specs}
    assert tokens["obs_primary"] == 16 + 8
    assert module.image_positions["primary"].value.shape[1] == 24
    assert module.image_tokenizers["primary"].keypoints.embed.value.shape == (8, 2, 32)
    saved = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(saved) == config
    del saved["image_tokenizers"][0]["keypoints"]
    assert ModelConfig.from_dict(saved).image_tokenizers[0].keypoints == 0


def test_new_weights_reach_the_compiled_predictor(language_dir):
    """The split state is kept between calls (splitting costs more than a small model's call);
    `update_params` must make the next call use the new weights (the training loop's
    closed-loop evaluation updates one model again and again)."""
    batch = make_batch(np.random.default_rng(0))
    model = OctoModel.from_config(
        tiny_config(language_dir), batch, jax.random.key(0), {"toy": statistics_entry()}
    )
    tasks = model.create_tasks(texts=["open the drawer", "close it"])
    before = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(0))
    again = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(0))
    np.testing.assert_array_equal(before, again)
    params = nnx.state(model.module, nnx.Param)
    out = params["head"]["network"]["proj_out"]
    out["bias"].value = out["bias"].value + 1.0
    model.update_params(params)
    after = model.sample_actions(batch["observation"], tasks, rng=jax.random.key(0))
    assert np.abs(after - before).max() > 1e-3

"""Fidelity to Octo's design (issue 14): each test here failed on the code before its fix.

1. timestep positional embeddings sized by ``max_horizon`` and sliced to the window;
2. the presets' task-conditioning dropout keeps exactly one modality when both exist;
3. the discrete head's bins follow the action normalization;
4. readouts attend causally to their own group;
5. FiLM starts as the identity;
6. the diffusion and flow heads default to no dropout.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from flax import nnx

from configs import finetune as finetune_configs
from configs import pretrain as pretrain_configs
from octo_like.config.typed import ConfigError, to_plain
from octo_like.data import traj_transforms as tt
from octo_like.model.config import HeadConfig, ModelConfig
from octo_like.model.heads import make_action_head
from octo_like.model.tokenizers.image import ImageTokenizer
from octo_like.model.tokenizers.stems import FiLM
from octo_like.model.tokens import AttentionRule, build_attention_mask, default_rules
from octo_like.training.config import parse_train_config
from tests.data.test_traj_transforms import goal_traj, to_numpy
from tests.training.test_finetune import adapt, readouts, tiny_batch, tiny_config, tiny_model

# ------------------------------------------------------------- 1. positions by max_horizon


def last_frames(batch: dict, window: int) -> dict:
    """The batch with only its last `window` timesteps (observations and action chunks)."""
    observation = {
        k: (v[:, -window:] if k != "pad_mask_dict" else {m: a[:, -window:] for m, a in v.items()})
        for k, v in batch["observation"].items()
    }
    return {
        **batch,
        "observation": observation,
        "action": batch["action"][:, -window:],
        "action_pad_mask": batch["action_pad_mask"][:, -window:],
    }


def test_fine_tuning_with_another_window_keeps_the_timestep_embeddings():
    """Octo fine-tunes window 1 from a window-2 model: nothing positional is re-initialized."""
    base = tiny_model(tiny_config(), tiny_batch())
    assert base.config.max_horizon == 10
    batch = last_frames(tiny_batch(), 1)
    model, report = adapt(base, tiny_config(window=1), batch)
    positional = [p for p in report.mismatched if "position" in p]
    assert positional == [], report.table()
    assert base.module.image_positions["primary"].value.shape[0] == 10
    np.testing.assert_array_equal(
        model.module.readout_position.value, base.module.readout_position.value
    )
    # The window-1 model sees the first embedding row, as the window-2 model's first frame does.
    assert readouts(model, batch).shape[1] == 1


def test_max_horizon_is_validated_and_old_configs_keep_their_shapes(tmp_path):
    with pytest.raises(ValueError, match="max_horizon"):
        tiny_config(window=3, max_horizon=2)
    legacy = tiny_config().to_dict()
    del legacy["max_horizon"]  # saved before the key existed: embeddings sized by the window
    assert ModelConfig.from_dict(legacy).max_horizon == legacy["window"]

    old_style = tiny_model(tiny_config(max_horizon=2), tiny_batch())
    old_style.save_pretrained(0, str(tmp_path))
    config_file = os.path.join(tmp_path, "0", "config", "metadata")
    with open(config_file) as f:
        saved = json.load(f)
    del saved["max_horizon"]
    with open(config_file, "w") as f:
        json.dump(saved, f)
    # Checkpoints from before the key existed also predate checksums (they load unverified).
    os.remove(os.path.join(tmp_path, "0", "checksums.json"))
    from octo_like.model.octo_model import OctoModel

    loaded = OctoModel.load_pretrained(str(tmp_path))
    assert loaded.config.max_horizon == 2
    np.testing.assert_allclose(
        readouts(loaded, tiny_batch()), readouts(old_style, tiny_batch()), atol=1e-6
    )


# ------------------------------------------------------- 2. goal-only conditioning is trained


def conditioning_counts(trajectory_config: dict, length: int = 4000) -> dict[str, float]:
    out = to_numpy(
        tt.drop_task_conditioning(
            goal_traj(length),
            tf.constant([3, 7]),
            language_only=trajectory_config["language_only_prob"],
            goal_only=trajectory_config["goal_only_prob"],
        )
    )
    masks = out["task"]["pad_mask_dict"]
    language, goal = masks["language_instruction"], masks["image_primary"]
    return {
        "language_only": float((language & ~goal).mean()),
        "goal_only": float((goal & ~language).mean()),
        "both": float((language & goal).mean()),
    }


@pytest.mark.parametrize(
    "trajectory",
    [
        to_plain(pretrain_configs.get_config("laptop"))["data"]["trajectory"],
        to_plain(pretrain_configs.get_config("base,bridge"))["data"]["trajectory"],
        to_plain(finetune_configs.get_config("full,multimodal"))["data"]["trajectory"],
    ],
    ids=["pretrain-laptop", "pretrain-base", "finetune-multimodal"],
)
def test_presets_keep_exactly_one_modality_when_both_exist(trajectory):
    """Octo's task augmentation: with language and a goal image, a frame keeps one of them,
    each about half the time, so either alone works at test time."""
    counts = conditioning_counts(trajectory)
    assert counts["both"] == 0.0, counts
    assert abs(counts["language_only"] - 0.5) < 0.03, counts
    assert abs(counts["goal_only"] - 0.5) < 0.03, counts


# ---------------------------------------------------- 3. discrete bins follow normalization


def discrete_config(tmp_path, normalization: str, kwargs: dict | None = None):
    raw = to_plain(pretrain_configs.get_config("debug"))
    raw["data"]["normalization"] = normalization
    raw["model"]["head"] = {"kind": "discrete", "kwargs": kwargs or {}}
    return parse_train_config(raw, str(tmp_path))


def test_discrete_bins_cover_normalized_actions_and_round_trip(tmp_path):
    config = discrete_config(tmp_path, "normal")
    kwargs = dict(config.model.head.kwargs)
    head = make_action_head(
        "discrete", embedding_dim=8, action_dim=3, action_horizon=2, rngs=nnx.Rngs(0), **kwargs
    )
    actions = jax.random.normal(jax.random.key(0), (20000,))  # mean 0 / std 1, as normalized
    bins = head.to_bins(actions)
    edge = float(jnp.mean((bins == 0) | (bins == head.num_bins - 1)))
    assert edge < 0.01, f"{edge:.1%} of normalized actions fall in the edge bins ({kwargs})"
    inside = jnp.abs(actions) < head.high
    error = jnp.abs(head.from_bins(bins) - actions)[inside]
    assert float(error.max()) <= head.bin_width / 2 + 1e-6

    bounds = discrete_config(tmp_path, "bounds").model.head.kwargs
    assert (bounds["low"], bounds["high"]) == (-1.0, 1.0)


def test_discrete_bins_that_disagree_with_normalization_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="normal.*low/high|low/high.*normal"):
        discrete_config(tmp_path, "normal", {"low": -1.0, "high": 1.0})
    with pytest.raises(ConfigError, match="low/high"):
        discrete_config(tmp_path, "none")
    explicit = discrete_config(tmp_path, "normal", {"low": -4.0, "high": 4.0}).model.head.kwargs
    assert (explicit["low"], explicit["high"]) == (-4.0, 4.0)


# ---------------------------------------------------------------- 4. causal readouts


def test_readouts_are_causal_over_their_own_group_and_stay_isolated():
    specs = default_rules([("task_language", 2)], [("obs_primary", 3), ("readout_action", 1)])
    readout = next(s for s in specs if s.name == "readout_action")
    assert readout.attends_to["readout_action"] == AttentionRule.CAUSAL
    prefix = [s for s in specs if s.is_prefix]
    timestep = [s for s in specs if not s.is_prefix]
    mask = np.asarray(build_attention_mask(prefix, timestep, window=3))
    # token order: 2 task, then per timestep 3 obs + 1 readout
    readout_at = [2 + 4 * t + 3 for t in range(3)]
    for t, query in enumerate(readout_at):
        for s, key in enumerate(readout_at):
            assert mask[query, key] == (s <= t), (t, s)
    observations = [2 + 4 * t + i for t in range(3) for i in range(3)]
    assert not mask[np.ix_(observations, readout_at)].any()  # nothing sees a readout
    assert not mask[np.ix_([0, 1], readout_at)].any()


# -------------------------------------------------------------------- 5. FiLM at init


def test_film_is_the_identity_at_initialization_for_any_condition():
    film = FiLM(8, 6, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    condition = 3.0 * jax.random.normal(jax.random.key(1), (2, 8))
    np.testing.assert_array_equal(film(x, condition), x)

    from tests.model.test_tokenizers import batch

    observations, tasks = batch()
    plain = ImageTokenizer("primary", num_features=16, rngs=nnx.Rngs(0))
    conditioned = ImageTokenizer("primary", num_features=16, film_dim=8, rngs=nnx.Rngs(0))
    # same stem weights: copy the plain stem's parameters into the FiLM-conditioned one
    plain_params = nnx.state(plain, nnx.Param).to_pure_dict()
    conditioned_params = nnx.state(conditioned, nnx.Param).to_pure_dict()
    shared = {k: v for k, v in plain_params.items() if k in conditioned_params}
    nnx.update(conditioned, nnx.State({**conditioned_params, **shared}))
    np.testing.assert_allclose(
        conditioned(observations, tasks, film_condition=condition).tokens,
        plain(observations, tasks).tokens,
        atol=1e-6,
    )


# ----------------------------------------------------------------- 6. head dropout off


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_generative_heads_default_to_no_dropout_and_keep_it_configurable(kind):
    small = dict(hidden_dim=16, num_blocks=1, time_dim=8)
    head = make_action_head(
        kind, embedding_dim=8, action_dim=2, action_horizon=2, rngs=nnx.Rngs(0), **small
    )
    assert head.network.dropout_rate == 0.0
    # no dropout: a training-mode loss does not depend on the dropout stream
    readouts_ = jax.random.normal(jax.random.key(0), (2, 1, 1, 8))
    actions = jax.random.normal(jax.random.key(1), (2, 1, 2, 2))
    pad = jnp.ones((2, 1), bool)
    action_pad = jnp.ones((2, 1, 2, 2), bool)
    loss_a, _ = head.loss(readouts_, actions, pad, action_pad, rng=jax.random.key(5), train=True)
    loss_b, _ = head.loss(readouts_, actions, pad, action_pad, rng=jax.random.key(5), train=False)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    dropped = make_action_head(
        kind, embedding_dim=8, action_dim=2, action_horizon=2, rngs=nnx.Rngs(0),
        dropout_rate=0.1, **small,
    )  # fmt: skip
    assert dropped.network.dropout_rate == 0.1
    assert HeadConfig(kind).kwargs == {} or "dropout_rate" not in HeadConfig(kind).kwargs
    assert dataclasses.is_dataclass(HeadConfig)

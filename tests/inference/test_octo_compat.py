"""Octo-style calls on `OctoModel`: bare action statistics, no pad_mask_dict, one instruction
as a str, goals with a batch axis, a one-dataset model's statistics read flat."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from octo_like.model.octo_model import OctoModel
from tests.model.test_octo_model import make_batch, statistics_entry, tiny_config


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> OctoModel:
    from octo_like.model.language.testing import write_tiny_t5_checkpoint

    language_dir = write_tiny_t5_checkpoint(str(tmp_path_factory.mktemp("t5")))
    batch = make_batch(np.random.default_rng(0))
    return OctoModel.from_config(
        tiny_config(language_dir), batch, jax.random.key(0), {"toy": statistics_entry()}
    )


def _inputs(model):
    batch = make_batch(np.random.default_rng(1))
    tasks = model.create_tasks(texts=["open the drawer", "close it"])
    tasks["image_primary"] = batch["task"]["image_primary"]
    return batch["observation"], tasks


def test_octo_statistics_form_unnormalizes_like_the_whole_entry(model):
    """Octo's call: unnormalization_statistics=model.dataset_statistics[NAME]["action"] (its
    mask leaves the gripper as predicted) equals passing the whole entry; none: normalized."""
    observation, tasks = _inputs(model)
    entry = model.dataset_statistics["toy"]
    expected = model.sample_actions(observation, tasks, entry, rng=jax.random.key(0))
    octo_form = entry["action"]
    assert octo_form["mask"] == [True] * 6 + [False]
    actions = model.sample_actions(
        observation, tasks, unnormalization_statistics=octo_form, rng=jax.random.key(0)
    )
    np.testing.assert_allclose(actions, expected, rtol=1e-6)
    normalized = model.sample_actions(observation, tasks, rng=jax.random.key(0))
    np.testing.assert_allclose(actions[..., :6], normalized[..., :6] * 2 + 1, rtol=1e-5)
    np.testing.assert_array_equal(actions[..., 6], normalized[..., 6])
    bounds = model.sample_actions(
        observation, tasks, octo_form, normalization_type="bounds", rng=jax.random.key(0)
    )
    p01, p99 = (np.asarray(octo_form[k]) for k in ("p01", "p99"))
    np.testing.assert_allclose(
        bounds[..., :6], ((normalized + 1) / 2 * (p99 - p01) + p01)[..., :6], rtol=1e-5
    )


def test_a_key_in_the_statistics_place_is_named(model):
    """Octo's signature puts unnormalization_statistics third; the old positional rng is a
    TypeError naming the keyword, never a silent misuse."""
    observation, tasks = _inputs(model)
    with pytest.raises(TypeError, match="rng="):
        model.sample_actions(observation, tasks, jax.random.key(0))
    with pytest.raises(ValueError, match="rng=jax.random.key"):
        model.sample_actions(observation, tasks)


def test_missing_pad_mask_dict_is_filled_with_a_warning(model):
    observation, tasks = _inputs(model)
    # Octo's convention: no pad_mask_dict means every modality is valid, the goal image too.
    tasks["pad_mask_dict"] = {k: np.ones_like(v) for k, v in tasks["pad_mask_dict"].items()}
    tasks["pad_mask_dict"]["image_primary"] = np.ones(len(tasks["image_primary"]), bool)
    expected = model.sample_actions(observation, tasks, rng=jax.random.key(0))
    bare_observation = {k: v for k, v in observation.items() if k != "pad_mask_dict"}
    bare_tasks = {k: v for k, v in tasks.items() if k != "pad_mask_dict"}
    with pytest.warns(UserWarning, match="pad_mask_dict"):
        actions = model.sample_actions(bare_observation, bare_tasks, rng=jax.random.key(0))
    np.testing.assert_array_equal(actions, expected)


def test_one_instruction_as_a_str_is_one_task_like_a_list_of_one(model):
    """Octo's examples/03 passes the instruction itself: one task (batch 1), not one per
    character; the tokens equal the list form's."""
    listed = model.create_tasks(texts=["open the drawer"])
    single = model.create_tasks(texts="open the drawer")
    assert single["language_tokens"].shape[0] == 1
    for key in ("language_tokens", "language_mask", "image_primary"):
        np.testing.assert_array_equal(single[key], listed[key])
    assert single["pad_mask_dict"]["language_instruction"].tolist() == [True]
    assert single["pad_mask_dict"]["image_primary"].tolist() == [False]


def test_octo_goals_have_a_batch_axis_and_may_carry_other_keys(model):
    """examples/04: ``goals = jax.tree.map(lambda x: x[None], obs)`` keyed by image key, with
    proprio beside the image (not read); a texts / goals batch mismatch is named."""
    image = np.full((1, 32, 32, 3), 7, np.uint8)
    tasks = model.create_tasks(goals={"image_primary": image, "proprio": np.zeros((1, 5))})
    np.testing.assert_array_equal(tasks["image_primary"], image)
    assert tasks["pad_mask_dict"]["image_primary"].tolist() == [True]
    assert tasks["pad_mask_dict"]["language_instruction"].tolist() == [False]
    both = model.create_tasks(texts="open the drawer", goals={"image_primary": image})
    assert both["pad_mask_dict"]["language_instruction"].tolist() == [True]
    with pytest.raises(ValueError, match="2 texts but goal batch sizes"):
        model.create_tasks(texts=["a", "b"], goals={"image_primary": image})


def test_one_datasets_statistics_read_flat_as_octo_stores_them(model, tmp_path):
    """Octo's examples/03: model.dataset_statistics["action"] for a one-dataset model; the keyed
    form keeps working and a saved checkpoint stores only the datasets."""
    statistics = model.dataset_statistics
    assert list(statistics) == ["toy"] and len(statistics) == 1
    assert statistics["action"] == statistics["toy"]["action"]
    assert statistics["action"]["mask"] == [True] * 6 + [False]
    assert (statistics["num_transitions"], statistics["num_trajectories"]) == (1, 1)
    assert "action" in statistics and statistics.get("action") is not None
    assert "proprio" not in statistics and statistics.get("proprio") is None  # it has none
    with pytest.raises(KeyError, match="'toy' has no proprio statistics"):
        statistics["proprio"]
    with pytest.raises(KeyError, match=r"'bridge' is not a dataset of this model.*'toy'"):
        statistics["bridge"]
    arrays = jax.tree.map(np.asarray, statistics, is_leaf=lambda x: isinstance(x, list))
    np.testing.assert_array_equal(arrays["action"]["mean"], statistics["toy"]["action"]["mean"])
    assert list(arrays) == ["toy"]  # jax.tree traverses it as the dict it is
    model.save_pretrained(0, str(tmp_path))
    with open(tmp_path / "0" / "dataset_statistics" / "metadata") as f:
        saved = json.load(f)
    assert list(saved) == ["toy"]
    assert set(saved["toy"]) == {"statistics", "normalization", "action_normalization_mask"}
    loaded = OctoModel.load_pretrained(str(tmp_path))
    assert loaded.dataset_statistics["action"] == statistics["action"]


def test_a_flat_key_of_several_datasets_names_them(model):
    entry = model.dataset_statistics["toy"]
    several = OctoModel(
        model.module, model.config, model.input_spec, {"a": entry, "b": entry}, None
    ).dataset_statistics
    with pytest.raises(KeyError, match=r"several datasets \('a', 'b'\); choose one"):
        several["action"]
    assert "action" not in several and several["a"]["action"] == entry["action"]
    named_like_a_key = OctoModel(
        model.module, model.config, model.input_spec, {"action": entry}, None
    ).dataset_statistics
    assert named_like_a_key["action"]["normalization"] == "normal"  # the dataset, keyed
    with pytest.raises(KeyError, match="named 'action', like a flat key"):
        named_like_a_key["num_transitions"]

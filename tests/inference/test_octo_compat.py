"""Octo-style calls on `OctoModel.sample_actions`: bare action statistics, no pad_mask_dict."""

from __future__ import annotations

import copy

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


def test_bare_action_statistics_unnormalize_like_the_whole_entry(model):
    observation, tasks = _inputs(model)
    entry = model.dataset_statistics["toy"]
    expected = model.sample_actions(observation, tasks, jax.random.key(0), entry)
    for given in (entry["statistics"]["action"], entry["statistics"]):
        actions = model.sample_actions(
            observation, tasks, jax.random.key(0), unnormalization_statistics=given
        )
        np.testing.assert_array_equal(actions, expected)


def test_unknown_bare_statistics_name_the_argument(model):
    observation, tasks = _inputs(model)
    other = copy.deepcopy(model.dataset_statistics["toy"]["statistics"]["action"])
    other["mean"] = [9.0] * len(other["mean"])
    with pytest.raises(ValueError, match=r"model\.dataset_statistics\[NAME\].*toy"):
        model.sample_actions(observation, tasks, jax.random.key(0), other)


def test_missing_pad_mask_dict_is_filled_with_a_warning(model):
    observation, tasks = _inputs(model)
    # Octo's convention: no pad_mask_dict means every modality is valid, the goal image too.
    tasks["pad_mask_dict"] = {k: np.ones_like(v) for k, v in tasks["pad_mask_dict"].items()}
    tasks["pad_mask_dict"]["image_primary"] = np.ones(len(tasks["image_primary"]), bool)
    expected = model.sample_actions(observation, tasks, jax.random.key(0), {})
    bare_observation = {k: v for k, v in observation.items() if k != "pad_mask_dict"}
    bare_tasks = {k: v for k, v in tasks.items() if k != "pad_mask_dict"}
    with pytest.warns(UserWarning, match="pad_mask_dict"):
        actions = model.sample_actions(bare_observation, bare_tasks, jax.random.key(0), {})
    np.testing.assert_array_equal(actions, expected)

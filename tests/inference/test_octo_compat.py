"""Octo-style calls on `OctoModel.sample_actions`: bare action statistics, no pad_mask_dict."""

from __future__ import annotations

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

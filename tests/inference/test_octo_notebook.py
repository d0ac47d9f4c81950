"""Octo's own inference example (examples/01_inference_pretrained.ipynb, its call sequence) runs
on a converted Octo checkpoint with only the import line changed, at the fixture's tiny size:
one frame and no wrist camera to a model trained on two of each, then goal- and
language-conditioned windows of two."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from octo_like.model.octo_import.convert import convert_octo

# was: from octo.model.octo_model import OctoModel
from octo_like.model.octo_model import OctoModel

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
SIZE = 32  # the fixture's primary camera (Octo-1.5: 256)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("octo") / "octo_tiny_native")
    convert_octo(os.path.join(FIXTURE, "octo_tiny"), os.path.join(FIXTURE, "tiny_t5"), out)
    return out


def episode_images(steps: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(steps)]


def test_the_notebooks_calls_run_unchanged(checkpoint):
    model = OctoModel.load_pretrained(checkpoint)
    assert "image_primary" in model.get_pretty_spec()
    # cell: one image, batch + time horizon 1, no wrist camera
    img = episode_images(1)[0]
    img = img[np.newaxis, np.newaxis, ...]
    observation = {"image_primary": img, "timestep_pad_mask": np.array([[True]])}
    task = model.create_tasks(texts=["pick up the fork"])
    action = model.sample_actions(
        observation,
        task,
        unnormalization_statistics=model.dataset_statistics["fixture_dataset"]["action"],
        rng=jax.random.PRNGKey(0),
    )
    assert action.shape == (1, 4, 7) and np.isfinite(action).all()  # [batch, chunk, dim]
    normalized = model.sample_actions(observation, task, rng=jax.random.PRNGKey(0))
    statistics = model.dataset_statistics["fixture_dataset"]["action"]
    mask = np.asarray(statistics["mask"])
    np.testing.assert_allclose(  # unnormalized where the mask says so, the gripper as is
        action[..., mask],
        (normalized * np.asarray(statistics["std"]) + np.asarray(statistics["mean"]))[..., mask],
        rtol=1e-5,
    )
    np.testing.assert_array_equal(action[..., ~mask], normalized[..., ~mask])

    # cells: an episode, a window of 2, goal- then language-conditioned tasks
    window_size = 2
    images = episode_images()
    goal_image = images[-1]
    goal_task = model.create_tasks(goals={"image_primary": goal_image[None]})
    language_task = model.create_tasks(texts=["open the drawer"])
    for task in (goal_task, language_task):
        pred_actions = []
        for step in range(len(images) - (window_size - 1)):
            input_images = np.stack(images[step : step + window_size])[None]
            observation = {
                "image_primary": input_images,
                "timestep_pad_mask": np.full((1, input_images.shape[1]), True, dtype=bool),
            }
            actions = model.sample_actions(
                observation,
                task,
                unnormalization_statistics=model.dataset_statistics["fixture_dataset"]["action"],
                rng=jax.random.PRNGKey(0),
            )
            pred_actions.append(actions[0])  # remove batch dim
        pred_actions = np.array(pred_actions)
        assert pred_actions.shape == (4, 4, 7) and np.isfinite(pred_actions).all()
        assert np.abs(np.diff(pred_actions, axis=0)).max() > 0  # the frames matter


def test_a_skipped_camera_is_the_same_as_a_masked_one(checkpoint):
    """Octo skips a tokenizer whose camera is absent; here its tokens are masked keys, which get
    exactly zero attention weight: the same actions as sending it masked."""
    model = OctoModel.load_pretrained(checkpoint)
    img = np.stack(episode_images(2))[None]
    task = model.create_tasks(texts=["pick up the fork"])
    without = model.sample_actions(
        {"image_primary": img, "timestep_pad_mask": np.ones((1, 2), bool)},
        task,
        rng=jax.random.PRNGKey(1),
    )
    masked = {
        "image_primary": img,
        "image_wrist": np.full((1, 2, SIZE, SIZE, 3), 200, np.uint8),
        "timestep_pad_mask": np.ones((1, 2), bool),
        "pad_mask_dict": {
            "image_primary": np.ones((1, 2), bool),
            "image_wrist": np.zeros((1, 2), bool),
        },
    }
    np.testing.assert_array_equal(
        model.sample_actions(masked, task, rng=jax.random.PRNGKey(1)), without
    )
    with pytest.raises(ValueError, match="missing 'image_wrist'.*marks present"):
        model.sample_actions(
            {"image_primary": img, "timestep_pad_mask": np.ones((1, 2), bool),
             "pad_mask_dict": {"image_primary": np.ones((1, 2), bool),
                               "image_wrist": np.ones((1, 2), bool)}},
            task,
            rng=jax.random.PRNGKey(1),
        )  # fmt: skip


def test_a_pad_mask_dict_of_another_kind_is_named(checkpoint):
    """Octo-format inputs (the notebook path): a dict of masks is accepted, a list of them is
    refused naming the field (it read as an ambiguous array truth value, issue 40)."""
    model = OctoModel.load_pretrained(checkpoint)
    img = np.stack(episode_images(2))[None]
    masks = {"image_primary": np.ones((1, 2), bool)}
    observation = {"image_primary": img, "timestep_pad_mask": np.ones((1, 2), bool)}
    task = model.create_tasks(texts=["pick up the fork"])
    actions = model.sample_actions(
        {**observation, "pad_mask_dict": masks}, task, rng=jax.random.PRNGKey(1)
    )
    assert np.isfinite(actions).all()
    with pytest.raises(TypeError, match="observation pad_mask_dict must be a dict.*got a list"):
        model.sample_actions(
            {**observation, "pad_mask_dict": list(masks.values())}, task, rng=jax.random.PRNGKey(1)
        )
    bad_task = {**task, "pad_mask_dict": [np.ones(1, bool)]}
    with pytest.raises(TypeError, match="task pad_mask_dict must be a dict.*got a list"):
        model.sample_actions(observation, bad_task, rng=jax.random.PRNGKey(1))


def test_policy_gives_an_imported_model_octos_evaluation_frames(checkpoint):
    """Policy prepares frames of any size as Octo's evaluation wrapper does: Lanczos-3 resize
    for every camera, the centred mean-augmentation crop (area 0.9) on the primary only."""
    from octo_like.inference.host_resize import octo_eval_frames
    from octo_like.inference.observations import prepare_observations

    model = OctoModel.load_pretrained(checkpoint)
    assert model.config.frame_resize == "lanczos3" and model.config.frame_crop_area == 0.9
    rng = np.random.default_rng(3)
    frames = {k: rng.integers(0, 256, (1, 2, 48, 40, 3), np.uint8) for k in ("primary", "wrist")}
    prepared = prepare_observations(
        {f"image_{k}": v for k, v in frames.items()},
        config=model.config,
        input_spec=model.input_spec,
        proprio_statistics=None,
        normalization="normal",
    )
    np.testing.assert_array_equal(
        prepared["image_primary"], octo_eval_frames(frames["primary"], (SIZE, SIZE), 0.9)
    )
    np.testing.assert_array_equal(
        prepared["image_wrist"], octo_eval_frames(frames["wrist"], (SIZE, SIZE), None)
    )
    same_size = rng.integers(0, 256, (1, 2, SIZE, SIZE, 3), np.uint8)  # cropped all the same
    prepared = prepare_observations(
        {"image_primary": same_size, "image_wrist": same_size},
        config=model.config,
        input_spec=model.input_spec,
        proprio_statistics=None,
        normalization="normal",
    )
    assert not np.array_equal(prepared["image_primary"], same_size)
    np.testing.assert_array_equal(prepared["image_wrist"], same_size)

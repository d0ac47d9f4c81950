"""Octo's call forms check what they are given (issue 69 item 3): every bad argument of
`create_tasks`, `sample_actions`, `run_transformer` and the Policy's observation is refused by
name (argument, key, expected and given), after the healthy call of the same form is accepted.
The model is the converted Octo-1.5 fixture (tests/fixtures/octo15), called as Octo's examples
call it."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from octo_like.inference.observations import prepare_observations
from octo_like.model.octo_import.convert import import_octo

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
RNG = jax.random.key(0)


@pytest.fixture(scope="module")
def model():
    return import_octo(os.path.join(FIXTURE, "octo_tiny"), os.path.join(FIXTURE, "tiny_t5"))


@pytest.fixture(scope="module")
def healthy(model):
    """Octo's examples/01 call: example batch observations, one instruction, a key."""
    observations = model.example_batch["observation"]
    tasks = model.create_tasks(texts=["pick up the fork"])
    actions = model.sample_actions(observations, tasks, rng=RNG)
    assert np.isfinite(actions).all()
    model.run_transformer(observations, tasks)
    return observations, tasks


def goal_image(model, dtype=np.uint8):
    shape = model.input_spec["task"]["image_primary"]["shape"]
    return np.zeros((1, *shape), dtype)


def test_goals_are_checked_by_key_type_and_dtype(model, healthy):
    good = model.create_tasks(goals={"image_primary": goal_image(model)})
    assert good["pad_mask_dict"]["image_primary"].all()
    with pytest.raises(ValueError, match=r"goals\['image_top'\]: not a goal camera"):
        model.create_tasks(goals={"image_top": goal_image(model)})
    with pytest.raises(TypeError, match=r"goals\['image_primary'\] has dtype float64"):
        model.create_tasks(goals={"image_primary": goal_image(model, np.float64) + 0.35})
    with pytest.raises(TypeError, match="goals must be a dict"):
        model.create_tasks(goals=[goal_image(model)])
    with pytest.raises(ValueError, match=r"goals\['image_primary'\] has shape \[1, 5, 5, 3\]"):
        model.create_tasks(goals={"image_primary": np.zeros((1, 5, 5, 3), np.uint8)})


def test_texts_are_checked(model, healthy):
    assert len(model.create_tasks(texts="pick up the fork")["language_instruction"]) == 1
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid text"):
        model.create_tasks(texts=["pick", "bad \ud800 text"])
    with pytest.raises(TypeError, match=r"texts\[0\] must be str, got int"):
        model.create_tasks(texts=[7])


def test_observation_keys_and_layout_are_named(model, healthy):
    observations, tasks = healthy
    misspelled = {
        ("image_primery" if k == "image_primary" else k): v for k, v in observations.items()
    }
    with pytest.raises(ValueError, match="unknown observation key 'image_primery'.*image_primary"):
        model.sample_actions(misspelled, tasks, rng=RNG)
    with pytest.raises(ValueError, match="are observations and tasks swapped"):
        model.sample_actions(tasks, observations, rng=RNG)
    no_window = dict(observations, image_primary=observations["image_primary"][:, 0])
    with pytest.raises(ValueError, match="the window axis is missing"):
        model.sample_actions(no_window, tasks, rng=RNG)


def test_timestep_pad_masks_are_checked(model, healthy):
    observations, tasks = healthy
    batch, window = np.shape(observations["image_primary"])[:2]
    model.sample_actions(
        observations, tasks, rng=RNG, timestep_pad_mask=np.ones((batch, window), bool)
    )
    with pytest.raises(ValueError, match=r"timestep_pad_mask rows \[0\] are all False"):
        model.sample_actions(
            observations, tasks, rng=RNG, timestep_pad_mask=np.zeros((batch, window), bool)
        )
    with pytest.raises(ValueError, match=r"timestep_pad_mask has shape \[2, 2\]"):
        model.sample_actions(observations, tasks, rng=RNG, timestep_pad_mask=np.ones((2, 2), bool))


def test_tokens_outside_the_vocabulary_are_refused(model, healthy):
    observations, tasks = healthy
    tokens = dict(tasks, language_tokens=np.array(tasks["language_tokens"]))
    tokens["language_tokens"][0, 0] = 1_000_000
    with pytest.raises(ValueError, match=r"token ids \[1000000\] are outside"):
        model.sample_actions(observations, tokens, rng=RNG)


def test_sampling_arguments_are_named(model, healthy):
    observations, tasks = healthy
    name = sorted(model.dataset_statistics)[0]
    model.sample_actions(
        observations, tasks, rng=RNG, sample_shape=(2,),
        unnormalization_statistics=model.dataset_statistics[name]["action"],
    )  # fmt: skip
    for rng in (0, "seed"):
        with pytest.raises(TypeError, match="rng must be a JAX key"):
            model.sample_actions(observations, tasks, rng=rng)
    with pytest.raises(TypeError, match=r"sample_shape must be a tuple of ints such as \(3,\)"):
        model.sample_actions(observations, tasks, rng=RNG, sample_shape=3)
    with pytest.raises(TypeError, match="is a name; pass the statistics"):
        model.sample_actions(observations, tasks, rng=RNG, unnormalization_statistics=name)
    with pytest.raises(TypeError, match="not one dataset's statistics"):
        model.sample_actions(
            observations, tasks, rng=RNG,
            unnormalization_statistics=dict(model.dataset_statistics),
        )  # fmt: skip


def test_a_task_batch_unlike_the_observations_names_both(model, healthy):
    observations, _ = healthy
    two = model.create_tasks(texts=["pick up the fork", "open the drawer"])
    with pytest.raises(ValueError, match=r"tasks have batch \[2\].*observations have batch 1"):
        model.sample_actions(observations, two, rng=RNG)


def test_policy_frames_of_no_or_absurd_size_are_refused_before_resizing(model, healthy):
    observations, _ = healthy
    window = np.shape(observations["image_primary"])[1]

    def prepare(height, width):
        frames = np.broadcast_to(np.zeros((1, 1, 1, 1, 3), np.uint8), (1, window, height, width, 3))
        return prepare_observations(
            {"image_primary": frames}, config=model.config, input_spec=model.input_spec,
            proprio_statistics=None, normalization="normal",
        )  # fmt: skip

    assert prepare(480, 640)["image_primary"].shape[2:4] == tuple(
        model.input_spec["observation"]["image_primary"]["shape"][1:3]
    )
    for height, width in ((0, 0), (12000, 12000)):
        with pytest.raises(ValueError, match=f"frames are {height}x{width}"):
            prepare(height, width)

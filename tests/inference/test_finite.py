"""Finite in, finite out: a NaN, Inf or absurd number from a robot is refused with the field and
index named (by `Policy` and by the server, counted in its stats), an all-padding window is
refused, and non-finite actions never leave the policy."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from octo_like.inference import Policy
from octo_like.inference.client import PolicyClient, PolicyServerError
from octo_like.inference.finite import NonFiniteActions
from octo_like.inference.server import PolicyServer
from tests.inference.conftest import HORIZON, ROBOT_A, ROBOT_P
from tests.inference.test_server import window

BAD_PROPRIO = [
    ("nan everywhere", lambda p: np.full_like(p, np.nan), r"non-finite.*index \[0, 0, 0\]"),
    ("one nan", lambda p: _set(p, (0, 1, 3), np.nan), r"1 non-finite value.*index \[0, 1, 3\]"),
    ("one inf", lambda p: _set(p, (0, 0, 2), -np.inf), r"non-finite.*-?inf.*index \[0, 0, 2\]"),
    ("1e30", lambda p: _set(p, (0, 1, 4), 1e30), r"value 1e\+30 at index \[0, 1, 4\]"),
]


def _set(array: np.ndarray, index, value) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


@pytest.mark.parametrize("name, corrupt, message", BAD_PROPRIO, ids=[c[0] for c in BAD_PROPRIO])
def test_a_bad_proprio_value_is_refused_naming_field_and_index(policy, name, corrupt, message):
    observation = window(np.random.default_rng(0), 1)
    observation["proprio"] = corrupt(observation["proprio"])
    with pytest.raises(ValueError, match=f"observation 'proprio'.*{message}"):
        policy.predict_chunks(observation, "open the drawer")


def test_a_session_step_with_a_nan_reading_is_refused(policy):
    session = policy.new_session()
    session.reset("open the drawer")
    frame = {k: v[-1] for k, v in window(np.random.default_rng(1)).items()}
    assert np.isfinite(session.step(frame)).all()
    frame["proprio"] = _set(frame["proprio"], (2,), np.nan)
    with pytest.raises(ValueError, match=r"frame 'proprio'.*non-finite.*index \[2\]"):
        session.step(frame)
    frame["proprio"] = _set(frame["proprio"], (2,), 0.5)  # the bad frame was not kept
    assert np.isfinite(session.step(frame)).all()


def test_an_all_padding_window_is_refused(policy):
    observation = window(np.random.default_rng(2), 2)
    observation["timestep_pad_mask"] = np.array([[True, True], [False, False]])
    with pytest.raises(ValueError, match=r"window\(s\) \[1\] .*no valid timestep"):
        policy.predict_chunks(observation, ["open", "close"])
    observation["timestep_pad_mask"] = np.array([[False, True], [True, True]])
    assert np.isfinite(policy.predict_chunks(observation, ["open", "close"])).all()


def test_non_finite_actions_never_leave_the_policy(tiny_checkpoint):
    policy = Policy.from_checkpoint(tiny_checkpoint, warmup=False)
    head = nnx.state(policy.model.module.head, nnx.Param)
    poisoned = jax.tree.map(lambda p: p * np.float32(np.nan), head)
    params = nnx.state(policy.model.module, nnx.Param)
    params["head"] = poisoned
    policy.model.update_params(params)
    with pytest.raises(NonFiniteActions, match=r"non-finite action value\(s\) \(windows \[0\]"):
        policy.predict_chunks(window(np.random.default_rng(3), 1), "open the drawer")


def test_the_server_names_bad_numbers_and_counts_refusals(policy):
    rng = np.random.default_rng(4)
    with (
        PolicyServer(policy, "127.0.0.1", 0).running() as port,
        PolicyClient("127.0.0.1", port) as client,
    ):
        observation = window(rng)
        observation["proprio"] = _set(observation["proprio"], (1, 0), np.inf)
        with pytest.raises(PolicyServerError, match=r"observation 'proprio'.*index \[1, 0\]"):
            client.infer(observation, "open the drawer")
        client.reset("open the drawer")
        frame = {k: v[-1] for k, v in window(rng).items()}
        frame["proprio"] = np.full(ROBOT_P, np.nan, np.float32)
        with pytest.raises(PolicyServerError, match=r"frame 'proprio'.*non-finite"):
            client.step(frame)
        good = client.infer(window(rng), "open the drawer")
        assert good.shape == (HORIZON, ROBOT_A) and np.isfinite(good).all()
        stats = client.request({"metadata": True})["stats"]
    assert stats["refused"]["ValueError"] == 2 and stats["dropped"] == 0

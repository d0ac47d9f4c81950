"""A request field of the wrong container type is named with what it must be and what it got,
at every entry: `Policy`, the session history and the server (issue 40: ``pad_mask_dict`` sent
as a list failed with numpy's "The truth value of an array ... is ambiguous")."""

from __future__ import annotations

import re

import numpy as np
import pytest

from octo_like.inference.client import PolicyClient, PolicyServerError
from octo_like.inference.history import ObservationHistory
from octo_like.inference.request_fields import check_field_types
from octo_like.inference.server import PolicyServer
from octo_like.inference.server_limits import ServerLimits
from tests.inference.conftest import HORIZON, ROBOT_A, WINDOW
from tests.inference.test_server import window

WRONG = [  # (field, value, what the error says it got)
    ("pad_mask_dict", lambda b: [np.ones((*b, WINDOW), bool)], "got a list of 1 (ndarray)"),
    ("pad_mask_dict", lambda b: np.ones((*b, WINDOW), bool), "got an array bool"),
    ("pad_mask_dict", lambda b: "image_primary", "got a str 'image_primary'"),
    ("proprio", lambda b: {"joints": np.zeros(3)}, "an array, got a map"),
    ("image_wrist", lambda b: "front.png", "an array, got a str"),
    ("proprio", lambda b: [[0.0, 1.0], [2.0]], "an array, got a list of 2"),
]


def _with(observation: dict, field: str, value) -> dict:
    return {**observation, field: value}


def test_policy_names_the_field_and_both_types(policy):
    rng = np.random.default_rng(0)
    healthy = window(rng, 1)
    masks = {"image_primary": np.ones((1, WINDOW), bool), "proprio": np.ones((1, WINDOW), bool)}
    chunks = policy.predict_chunks(_with(healthy, "pad_mask_dict", masks), ["open"])
    assert chunks.shape == (1, HORIZON, ROBOT_A)
    for field, make, got in WRONG:
        with pytest.raises(TypeError, match=f"^observation '{field}' must be .*{re.escape(got)}"):
            policy.predict_chunks(_with(healthy, field, make((1,))), ["open"])


def test_a_session_frame_names_the_field():
    history = ObservationHistory(WINDOW)
    frame = {"proprio": np.zeros(5, np.float32)}
    assert history.push({**frame, "pad_mask_dict": {"proprio": np.array(True)}})
    with pytest.raises(TypeError, match="frame 'pad_mask_dict' must be a map .* a list of 1"):
        history.push({**frame, "pad_mask_dict": [np.array(True)]})


def test_the_server_names_the_field(policy):
    rng = np.random.default_rng(1)
    server = PolicyServer(policy, "127.0.0.1", 0, limits=ServerLimits.up_to(1))
    with server.running() as port, PolicyClient("127.0.0.1", port) as client:
        masks = {"image_primary": np.ones(WINDOW, bool)}
        healthy = {"observation": _with(window(rng), "pad_mask_dict", masks), "instruction": "x"}
        assert np.shape(client.request(healthy)["actions"]) == (HORIZON, ROBOT_A)
        for field, make, got in WRONG:
            request = {"observation": _with(window(rng), field, make(())), "instruction": "x"}
            named = f"TypeError: observation '{field}' must be .*{re.escape(got)}"
            with pytest.raises(PolicyServerError, match=named):
                client.request(request)
        assert client.infer(window(rng), "x").shape == (HORIZON, ROBOT_A)  # still serving


def test_field_types_accept_arrays_numbers_and_stackable_lists():
    check_field_types(
        {"proprio": [[0.0, 1.0], [2.0, 3.0]], "timestep_pad_mask": [True, False],
         "image_primary": np.zeros((2, 4, 4, 3), np.uint8), "timestep": 3,
         "pad_mask_dict": {"proprio": [True, True]}}
    )  # fmt: skip
    with pytest.raises(TypeError, match="^observation must be a map of arrays, got a list"):
        check_field_types([np.zeros(3)])
    with pytest.raises(TypeError, match=r"pad_mask_dict\['proprio'\] must be an array, got a map"):
        check_field_types({"pad_mask_dict": {"proprio": {"a": 1}}})

"""Decoding and checking one client message, off the event loop.

A 21 MB message of two million keys took 15 s to unpack, check and describe; done on the
server's event loop it stalled every other client for that long. `parse_request` runs in a
small thread pool instead and turns a message into one of the request types below (or a
named error whose text stays short however large the message).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from octo_like.inference.history import add_batch_axis, is_batched
from octo_like.inference.request_fields import check_field_types
from octo_like.inference.server_limits import ServerLimits, check_frame, check_inference_request
from octo_like.inference.wire import unpackb
from octo_like.schema import describe_keys

REQUEST_KINDS = ("observation", "frame", "reset", "metadata")


@dataclasses.dataclass(frozen=True)
class Inference:
    """A stateless batch: observation with a batch axis, one text per window, goals or None."""

    observation: dict[str, Any]
    texts: list[str]
    goal: dict[str, np.ndarray] | None
    batch: int
    single: bool  # the client sent no batch axis: answer without one


@dataclasses.dataclass(frozen=True)
class Frame:
    frame: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Reset:
    instruction: str | None
    goal: Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Metadata:
    pass


Request = Inference | Frame | Reset | Metadata
MAX_MAP_KEYS = 256  # any map of a request; more are refused before they are decoded


def parse_request(message, metadata: Mapping[str, Any], limits: ServerLimits) -> Request:
    """Raises TypeError/ValueError naming what is wrong (texts bounded in length)."""
    if isinstance(message, str):
        raise TypeError("send binary msgpack messages, not text")
    try:
        request = unpackb(message, max_map_len=MAX_MAP_KEYS)
    except ValueError as e:
        if "map" in str(e) and "exceeds max_map_len" in str(e):
            raise ValueError(
                f"a map of the message has more than {MAX_MAP_KEYS} keys (requests hold "
                "observation, task and a few arrays)"
            ) from e
        raise ValueError(
            f"the message is not valid msgpack ({type(e).__name__}: {str(e)[:200]})"
        ) from e
    except Exception as e:
        detail = str(e)[:200]
        raise ValueError(f"the message is not valid msgpack ({type(e).__name__}: {detail})") from e
    if not isinstance(request, Mapping):
        raise TypeError(f"a request must be a map, got {type(request).__name__}")
    if "observation" in request:
        return _inference(request, metadata, limits)
    if "frame" in request:
        frame = as_dict(request["frame"], "frame")
        check_frame(frame, metadata, limits)
        return Frame(frame)
    if "reset" in request:
        options = as_dict(request["reset"] or {}, "reset")
        unknown = set(options) - {"instruction", "goal"}
        if unknown:
            raise ValueError(f"reset takes 'instruction' and 'goal', got {describe_keys(unknown)}")
        instruction, goal = options.get("instruction"), options.get("goal")
        check_inference_request(
            {}, "" if instruction is None else instruction, goal, single=True,
            metadata=metadata, limits=limits,
        )  # fmt: skip
        return Reset(instruction, goal)
    if "metadata" in request:
        return Metadata()
    raise ValueError(
        f"unknown request with keys {describe_keys(request)}; expected one of {list(REQUEST_KINDS)}"
    )


def _inference(request: Mapping[str, Any], metadata, limits: ServerLimits) -> Inference:
    observation = as_dict(request["observation"], "observation")
    if "instruction" not in request:
        raise ValueError("an observation request needs 'instruction' (\"\" for none)")
    instruction = request["instruction"]
    goal = request.get("goal")
    check_field_types(observation, "observation")  # before any shape is read
    single = not is_batched(observation)
    batch = check_inference_request(
        observation, instruction, goal, single=single, metadata=metadata, limits=limits
    )
    if single:
        observation = add_batch_axis(observation)
        goal = None if goal is None else {k: np.asarray(v)[None] for k, v in goal.items()}
    texts = [instruction] * batch if isinstance(instruction, str) else list(instruction)
    return Inference(observation, texts, goal, batch, single)


def as_dict(value, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what!r} must be a map of arrays, got {type(value).__name__}")
    return dict(value)

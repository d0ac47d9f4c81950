"""Server and Policy abuse: bad numbers, all-padding windows, unknown keys, trickled, oversize
and wrongly typed messages, too many connections, against the shared tiny checkpoint."""

from __future__ import annotations

import contextlib

import numpy as np

from tests.drill.common import case, classify_error, expect_error, one_line

HORIZON, ROBOT_P = 4, 5


def _window(rng, *lead):
    from tests.inference.test_server import window

    return window(rng, *lead)


@contextlib.contextmanager
def _served(ctx, **limits):
    from octo_like.inference import Policy
    from octo_like.inference.client import PolicyClient
    from octo_like.inference.server import PolicyServer
    from octo_like.inference.server_limits import ServerLimits

    policy = Policy.from_checkpoint(str(ctx.checkpoint), exec_horizon=2, seed=3)
    server_limits = ServerLimits.up_to(1, **limits)
    with (
        PolicyServer(policy, "127.0.0.1", 0, limits=server_limits).running() as port,
        PolicyClient("127.0.0.1", port) as client,
    ):
        yield client, port, server_limits


def _finite(actions, what: str):
    actions = np.asarray(actions)
    if np.isfinite(actions).all():
        return "silent", f"{what}: finite actions returned, no error"
    return "silent", f"{what}: NON-FINITE actions returned {actions.ravel()[:3]}"


def _proprio_case(case_id: str, value, index, via_step: bool = False) -> None:
    @case(case_id, "server")
    def run(ctx):
        rng = np.random.default_rng(0)
        with _served(ctx) as (client, _, _):
            if via_step:
                client.reset("open the drawer")
                frame = {k: v[-1] for k, v in _window(rng).items()}
                frame["proprio"] = np.asarray(frame["proprio"], np.float32).copy()
                frame["proprio"][index[-1]] = value
                send = lambda: _finite(client.step(frame), "step")  # noqa: E731
            else:
                observation = _window(rng)
                observation["proprio"] = np.asarray(observation["proprio"], np.float32).copy()
                observation["proprio"][index] = value
                send = lambda: _finite(client.infer(observation, "open"), "infer")  # noqa: E731
            try:
                return send()
            except Exception as error:  # noqa: BLE001 - the client raises the server's error
                text = str(error)
                named = "proprio" in text and ("index" in text or "finite" in text)
                return ("named" if named else "raw"), one_line(f"{type(error).__name__}: {text}")


_proprio_case("server-nan-proprio", np.nan, (0, 1))
_proprio_case("server-inf-proprio", np.inf, (1, 0))
_proprio_case("server-1e30-proprio", 1e30, (0, 2))
_proprio_case("server-step-nan-proprio", np.nan, (2,), via_step=True)
_proprio_case("server-step-inf-proprio", -np.inf, (0,), via_step=True)


@case("policy-all-padding", "server")
def all_padding(ctx):
    from octo_like.inference import Policy

    policy = Policy.from_checkpoint(str(ctx.checkpoint), warmup=False)
    observation = _window(np.random.default_rng(2), 1)
    observation["timestep_pad_mask"] = np.zeros((1, 2), bool)
    return expect_error(lambda: policy.predict_chunks(observation, ["open"]), r"timestep|window")


@case("policy-nan-proprio", "server")
def policy_nan(ctx):
    from octo_like.inference import Policy

    policy = Policy.from_checkpoint(str(ctx.checkpoint), warmup=False)
    observation = _window(np.random.default_rng(2), 1)
    observation["proprio"] = np.full_like(observation["proprio"], np.nan)
    return expect_error(lambda: policy.predict_chunks(observation, "open"), r"proprio")


def _raw_reply(case_id: str, make, names: str, good: str = "named") -> None:
    @case(case_id, "server", good=good)
    def run(ctx):
        from octo_like.inference.wire import packb

        with _served(ctx) as (client, _, _):
            try:
                reply = client.send_raw(make(client, packb))
            except Exception as error:  # noqa: BLE001
                return classify_error(error, names)
            if "error" in reply:
                import re

                ok = re.search(names, reply["error"]) and len(reply["error"]) < 4000
                return ("named" if ok else "raw"), one_line(f"error: {reply['error']}")
            outcome, evidence = _finite(reply.get("actions", []), "reply")
            if good == "none-needed" and "NON-FINITE" not in evidence:
                return "none-needed", f"answered with finite actions {np.shape(reply['actions'])}"
            return outcome, evidence


def _window_with(client, rng, **changes):
    from tests.inference import abusive_clients

    window = abusive_clients.request_window(client.metadata, rng)
    window["observation"].update(changes)
    return window


def _resized(client, side: int) -> dict:
    from tests.inference import abusive_clients

    return abusive_clients.request_window(client.metadata, np.random.default_rng(0), side)


def _bad_field(case_id: str, names: str, **field) -> None:
    """A window the server would answer, but for one observation field: `field`."""
    make = lambda c, packb: packb(_window_with(c, np.random.default_rng(0), **field))
    _raw_reply(case_id, make, names)


_raw_reply(
    "server-2m-unknown-keys",
    lambda c, packb: packb(
        {"observation": {f"k{i}": 0 for i in range(2_000_000)}, "instruction": ""}
    ),
    r"more|unknown|key",
)
_bad_field("server-image-float64", r"image_primary|dtype",
           image_primary=np.zeros((2, 32, 32, 3), np.float64))  # fmt: skip
_bad_field("server-image-wrong-channels", r"image_primary",
           image_primary=np.zeros((2, 32, 32, 4), np.uint8))  # fmt: skip
_bad_field("server-proprio-wrong-length", r"proprio", proprio=np.zeros((2, 3), np.float32))
_raw_reply("server-not-msgpack", lambda c, packb: b"\xc1garbage", r"decode|msgpack|message")
_raw_reply(
    "server-new-image-size",
    lambda c, packb: packb(_resized(c, 77)),
    r"image_primary", good="none-needed",
)  # fmt: skip


@case("server-trickled-message", "server")
def trickle(ctx):
    import threading

    from tests.inference import abusive_clients

    with _served(ctx, message_timeout_s=0.5) as (_, port, limits):
        out: dict = {}
        abusive_clients.trickle(port, out, threading.Event(), limits.message_timeout_s)
    closed = out.get("trickle_closed_after_s")
    if closed is not None and closed < 5:
        return "named", f"connection closed after {closed:.2f} s"
    return "crash", f"trickled connection held open: {out}"


@case("server-too-many-connections", "server")
def flood(ctx):
    import threading

    from tests.inference import abusive_clients

    with _served(ctx, max_connections=3) as (_, port, limits):
        out: dict = {}
        abusive_clients.flood(port, out, threading.Event(), limits.max_connections)
    if out.get("flood_refused", 0) >= 1:
        return "named", f"held {out.get('flood_held')}, refused {out['flood_refused']} (503)"
    return "silent", f"no connection refused: {out}"


@case("server-oversize-message", "server")
def oversize(ctx):
    with _served(ctx, max_request_bytes=1 << 20) as (client, _, _):
        try:
            reply = client.send_raw(b"\x00" * (2 << 20))
        except Exception as error:  # noqa: BLE001 - a closed connection is the documented answer
            text = f"{type(error).__name__}: {error}"
            return ("named" if "1009" in text or "too big" in text.lower() else "raw"), one_line(
                text
            )
        return "silent", one_line(f"answered: {reply}")

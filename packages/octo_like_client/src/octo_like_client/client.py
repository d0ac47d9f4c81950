"""`PolicyClient`: the robot computer's side of the policy server (numpy, websockets, msgpack only).

    with PolicyClient("127.0.0.1", 8000, token=os.environ.get("OCTO_POLICY_TOKEN")) as client:
        chunk = client.infer(window, "open the drawer")   # float32[H, A]
        client.reset("open the drawer"); action = client.step(frame)  # float32[A]

`tls=True` speaks ``wss://`` (a TLS-terminating reverse proxy in front of the server, see the
README); `token` is sent as ``Authorization: Bearer <token>`` when the server requires one.
"""

from __future__ import annotations

import http
import http.client
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from websockets.sync.client import connect

from octo_like_client.wire import HEALTH_PATH, TOKEN_HEADER, packb, unpackb

DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20
_RETRY_SECONDS = 0.25


class PolicyServerUnavailable(TimeoutError):
    """No server answered at the URL within the wait."""


class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


class PolicyServerBusy(PolicyServerError):
    """The server's queue is full; retry later."""


class PolicyClient:
    """A synchronous client; `metadata` (with the server's `limits`) arrives on connect."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        token: str | None = None,
        tls: bool = False,
        timeout: float | None = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        wait_for_server: float = 0.0,
    ):
        """`wait_for_server` seconds: keep retrying a refused connection (a server still
        loading its checkpoint) for at most this long, then raise `PolicyServerUnavailable`."""
        self.uri = f"{'wss' if tls else 'ws'}://{host}:{port}"
        headers = {TOKEN_HEADER: f"Bearer {token}"} if token else None
        deadline = time.monotonic() + wait_for_server
        while True:
            try:
                self._connection = connect(
                    self.uri,
                    open_timeout=timeout,
                    max_size=max_message_bytes,
                    compression=None,
                    additional_headers=headers,
                )
                break
            except OSError as error:  # refused / reset while the server starts
                if time.monotonic() >= deadline:
                    if wait_for_server <= 0:
                        raise
                    raise PolicyServerUnavailable(
                        f"no policy server at {self.uri} after {wait_for_server:g} s: {error}"
                    ) from error
                time.sleep(_RETRY_SECONDS)
        self.timeout = timeout
        self.metadata: dict[str, Any] = self._receive()["metadata"]
        self.last_latency_ms: float | None = None

    def infer(
        self,
        observation: Mapping[str, Any],
        instruction: str | list[str] = "",
        goal: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Action chunk(s) float32[(b,) H, A] for a window (batched or not)."""
        request: dict[str, Any] = {"observation": dict(observation), "instruction": instruction}
        if goal is not None:
            request["goal"] = dict(goal)
        reply = self.request(request)
        self.last_latency_ms = reply["latency_ms"]
        return reply["actions"]

    def reset(self, instruction: str | None = None, goal: Mapping[str, Any] | None = None):
        """Starts an episode of this connection's server-side session."""
        options: dict[str, Any] = {}
        if instruction is not None:
            options["instruction"] = instruction
        if goal is not None:
            options["goal"] = dict(goal)
        self.request({"reset": options})

    def step(self, frame: Mapping[str, Any]) -> np.ndarray:
        """One control step of the server-side session: float32[A]."""
        reply = self.request({"frame": dict(frame)})
        self.last_latency_ms = reply["latency_ms"]
        return reply["action"]

    def server_latency_ms(self) -> dict[str, float]:
        """The server's `Policy.latency_ms()` summary."""
        return self.request({"metadata": True})["latency_ms"]

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Sends one request; raises `PolicyServerError` (`PolicyServerBusy` when the server's
        queue is full) if the server answers an error."""
        reply = self.send_raw(packb(dict(message)))
        if "error" in reply:
            raise (PolicyServerBusy if reply.get("busy") else PolicyServerError)(reply["error"])
        return reply

    def send_raw(self, data: bytes | str) -> dict[str, Any]:
        """Sends `data` as is and returns the decoded reply (errors included, not raised)."""
        self._connection.send(data)
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        return unpackb(self._connection.recv(timeout=self.timeout))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_health(
    host: str = "127.0.0.1", port: int = 8000, timeout: float = 5.0, tls: bool = False
) -> bool:
    """True when ``GET /healthz`` answers 200 (the server is up and its loop responsive)."""
    connection_class = http.client.HTTPSConnection if tls else http.client.HTTPConnection
    connection = connection_class(host, port, timeout=timeout)
    try:
        connection.request("GET", HEALTH_PATH)
        return connection.getresponse().status == http.HTTPStatus.OK
    except OSError:
        return False
    finally:
        connection.close()


def wait_for_health(
    host: str = "127.0.0.1", port: int = 8000, timeout: float = 120.0, tls: bool = False
) -> None:
    """Polls ``GET /healthz`` until it answers 200; raises `PolicyServerUnavailable` naming the
    URL after `timeout` seconds (the server compiles its policy before it listens)."""
    url = f"{'https' if tls else 'http'}://{host}:{port}{HEALTH_PATH}"
    deadline = time.monotonic() + timeout
    while not check_health(host, port, timeout=min(5.0, max(timeout, 0.1)), tls=tls):
        if time.monotonic() >= deadline:
            raise PolicyServerUnavailable(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(_RETRY_SECONDS)

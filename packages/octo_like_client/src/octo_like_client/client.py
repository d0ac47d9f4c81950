"""`PolicyClient`: the robot computer's side of the policy server (numpy, websockets, msgpack only).

    with PolicyClient("127.0.0.1", 8000, token=os.environ.get("OCTO_POLICY_TOKEN")) as client:
        chunk = client.infer(window, "open the drawer")   # float32[H, A]
        client.reset("open the drawer"); action = client.step(frame)  # float32[A]

`tls=True` speaks ``wss://`` (a TLS-terminating reverse proxy in front of the server, see the
README); `token` is sent as ``Authorization: Bearer <token>`` when the server requires one.

A server that cannot answer raises a named error (errors.py) naming the URL and what happened,
never a websockets or socket exception: `PolicyServerRefused` (nothing listening),
`PolicyServerGone` (closed with no reply), `PolicyServerTimeout` (no reply within `timeout`),
`PolicyServerHandshakeFailed`. After a failure the connection is dropped and the next call opens
a new one, so a client outlives a server restart; a reply that comes after its timeout is never
mistaken for the next request's.
"""

from __future__ import annotations

import contextlib
import http
import http.client
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from octo_like_client.errors import (
    RECONNECTS,
    PolicyClientSettingError,
    PolicyServerBusy,
    PolicyServerError,
    PolicyServerGone,
    PolicyServerHandshakeFailed,
    PolicyServerRefused,
    PolicyServerTimeout,
    PolicyServerUnavailable,
    checked_seconds,
    named_error,
)
from octo_like_client.wire import HEALTH_PATH, TOKEN_HEADER, packb, unpackb

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "PolicyClient",
    "PolicyClientSettingError",
    "PolicyServerBusy",
    "PolicyServerError",
    "PolicyServerGone",
    "PolicyServerHandshakeFailed",
    "PolicyServerRefused",
    "PolicyServerTimeout",
    "PolicyServerUnavailable",
    "check_health",
    "wait_for_health",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20
# A first request to a new image size or batch bucket compiles on the server (tens of seconds on
# a CPU); a finite default still notices a stopped server within a minute.
DEFAULT_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 5.0  # a polite close() to a stopped server gives up after this
_RETRY_SECONDS = 0.25


class PolicyClient:
    """A synchronous client; `metadata` (with the server's `limits`) arrives on connect.

    Every call waits at most `timeout` seconds (finite: None or <= 0 raise
    `PolicyClientSettingError`) for its whole exchange, sending included. A call that fails
    drops the connection; the next call connects again once (no wait: a robot loop hears at once
    that the server is still down) and refreshes `metadata`. A new connection is a new
    server-side session: `step()` after a reconnect is answered "call reset(...) before step()".
    `reconnects` counts the connections opened after the first.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        token: str | None = None,
        tls: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        wait_for_server: float = 0.0,
    ):
        """`wait_for_server` seconds: keep retrying an unreachable server (one still loading its
        checkpoint) for at most this long, then raise the last `PolicyServerUnavailable`."""
        self.uri = f"{'wss' if tls else 'ws'}://{host}:{port}"
        self.timeout = checked_seconds("timeout", timeout)
        wait_for_server = checked_seconds("wait_for_server", wait_for_server, zero_ok=True)
        self._headers = {TOKEN_HEADER: f"Bearer {token}"} if token else None
        self._max_message_bytes = max_message_bytes
        self._connection: ClientConnection | None = None
        self.metadata: dict[str, Any] = {}
        self.last_latency_ms: float | None = None
        self.reconnects = 0
        deadline = time.monotonic() + wait_for_server
        while True:
            try:
                self._open()
                return
            except PolicyServerUnavailable as error:
                if time.monotonic() >= deadline:
                    if wait_for_server > 0:
                        raise type(error)(f"{error} (retried for {wait_for_server:g} s)") from error
                    raise
                time.sleep(_RETRY_SECONDS)

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
        """Sends `data` as is and returns the decoded reply (errors included, not raised);
        opens a new connection first when the last one failed or the server closed it."""
        if self._connection is None or self._connection.state is not State.OPEN:
            self._drop()
            self._open()
            self.reconnects += 1
        assert self._connection is not None
        return self._exchange(self._connection, data, "waiting for the reply")

    def close(self) -> None:
        """Closes the connection politely (a later call would open a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ connection
    def _open(self) -> None:
        """Connects and reads the server's metadata, or raises a named error."""
        try:
            connection = connect(
                self.uri,
                open_timeout=self.timeout,
                close_timeout=min(self.timeout, _CLOSE_TIMEOUT_S),
                max_size=self._max_message_bytes,
                compression=None,
                additional_headers=self._headers,
            )
        except Exception as error:
            named = named_error(self.uri, error, timeout=self.timeout, doing="connecting")
            if named is None:
                raise
            raise named from error
        hello = self._exchange(connection, None, "waiting for the metadata sent on connect")
        if not isinstance(hello.get("metadata"), dict):
            _shut(connection)
            raise PolicyServerHandshakeFailed(
                f"{self.uri} did not send a policy server's metadata on connect (got keys "
                f"{sorted(hello)}): is an octo_like policy server listening at that port?"
            )
        self._connection = connection
        self.metadata = hello["metadata"]

    def _exchange(
        self, connection: ClientConnection, data: bytes | str | None, doing: str
    ) -> dict[str, Any]:
        """Sends `data` (unless None) and returns the decoded reply, all within `timeout`; on
        any failure the connection is shut so that a late reply is never read as the next."""
        deadline = time.monotonic() + self.timeout
        try:
            if data is not None:
                # A stopped server stops reading: a large request fills the socket buffers and
                # would block forever. The socket's timeout bounds the send; reset after it.
                connection.socket.settimeout(max(deadline - time.monotonic(), 1e-3))
                try:
                    connection.send(data)
                finally:
                    with contextlib.suppress(OSError):
                        connection.socket.settimeout(None)
            message = connection.recv(timeout=max(deadline - time.monotonic(), 0.0))
        except Exception as error:
            _shut(connection)
            if connection is self._connection:
                self._connection = None
            named = named_error(self.uri, error, timeout=self.timeout, doing=doing)
            if named is None:
                raise
            raise named from error
        try:
            reply = unpackb(message)
            if not isinstance(reply, dict):
                raise TypeError(f"a {type(reply).__name__}, not a map")
        except Exception as error:  # noqa: BLE001 - a reply that is not the wire format
            _shut(connection)
            if connection is self._connection:
                self._connection = None
            raise PolicyServerError(
                f"{self.uri} sent a reply that is not the policy server's wire format "
                f"({type(error).__name__}: {error}); {RECONNECTS}"
            ) from error
        return reply

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            _shut(connection)


def _shut(connection: ClientConnection) -> None:
    """Ends a connection at once, without the close handshake a stopped server never answers;
    websockets' reader thread then closes the socket."""
    with contextlib.suppress(OSError):
        connection.socket.shutdown(socket.SHUT_RDWR)


def check_health(
    host: str = "127.0.0.1", port: int = 8000, timeout: float = 5.0, tls: bool = False
) -> bool:
    """True when ``GET /healthz`` answers 200 (the server is up and its loop responsive)."""
    timeout = checked_seconds("timeout", timeout)
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
    timeout = checked_seconds("timeout", timeout)
    url = f"{'https' if tls else 'http'}://{host}:{port}{HEALTH_PATH}"
    deadline = time.monotonic() + timeout
    while not check_health(host, port, timeout=min(5.0, timeout), tls=tls):
        if time.monotonic() >= deadline:
            raise PolicyServerUnavailable(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(_RETRY_SECONDS)

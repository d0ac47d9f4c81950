"""Every way a policy server can be unreachable is a named client error naming the URL, and a
client outlives its server's restart (issue 40). The server is tests/inference/
fake_policy_server.py, a process the tests SIGKILL and SIGSTOP; each test first shows a healthy
call answered."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import numpy as np
import pytest
from octo_like_client import (
    PolicyClient,
    PolicyClientSettingError,
    PolicyServerGone,
    PolicyServerHandshakeFailed,
    PolicyServerRefused,
    PolicyServerTimeout,
    PolicyServerUnavailable,
)

from tests.inference.fake_policy_server import FakeServer, fake_server

OBSERVATION = {"image_primary": np.zeros((2, 8, 8, 3), np.uint8)}


def _answers(client: PolicyClient, seconds: float = 0.0) -> np.ndarray:
    """The fake server's reply to a request that takes `seconds`: actions full of `seconds`."""
    actions = client.infer(OBSERVATION, f"{seconds}")
    np.testing.assert_array_equal(actions, np.full((4, 7), seconds, np.float32))
    return actions


def _url(port: int) -> str:
    return f"ws://127\\.0\\.0\\.1:{port}"


def test_timeout_must_be_finite_and_positive():
    with fake_server() as server:
        with PolicyClient("127.0.0.1", server.port, timeout=5) as client:
            _answers(client)
        for timeout in (None, 0, -1.0, float("inf"), float("nan")):
            with pytest.raises(PolicyClientSettingError, match=f"timeout={timeout!r}: must be"):
                PolicyClient("127.0.0.1", server.port, timeout=timeout)


def test_nothing_listening_is_refused_naming_the_url():
    with fake_server() as server:
        port = server.port
        with PolicyClient("127.0.0.1", port, timeout=5) as client:
            _answers(client)
    with pytest.raises(PolicyServerRefused, match=f"nothing listens at {_url(port)}: conn"):
        PolicyClient("127.0.0.1", port, timeout=5)


def test_the_fake_server_reports_requests_whose_lines_arrived_together():
    """Both lines in the pipe before the test reads the first (a loaded machine): the second is
    still seen (select() on the pipe missed it, buffered with the first, and the killer thread
    of the next test waited 10 s for it, then never killed the server)."""
    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=5) as client:
        _answers(client)
        _answers(client)
        started = time.monotonic()
        server.wait_for_request(2, timeout=3)
        assert time.monotonic() - started < 1


def test_killed_mid_request_is_gone_then_refused_then_reconnects_after_restart():
    server = FakeServer()
    port, first_pid = server.port, server.pid
    client = PolicyClient("127.0.0.1", port, timeout=20)
    try:
        _answers(client)
        killer = threading.Thread(target=lambda: (server.wait_for_request(2), server.kill()))
        killer.start()
        with pytest.raises(PolicyServerGone, match=f"{_url(port)} closed the connection with no"):
            client.infer(OBSERVATION, "30")  # the server is SIGKILLed while it handles this
        killer.join()
        with pytest.raises(PolicyServerRefused, match=_url(port)):
            client.infer(OBSERVATION, "0")  # still down: the dead connection is not reused
        with fake_server(port) as restarted:
            _answers(client)
            assert client.metadata["pid"] == restarted.pid != first_pid
            assert client.reconnects == 1
    finally:
        server.kill()
        client.close()


def test_a_restart_between_calls_needs_no_error():
    with fake_server() as server:
        port = server.port
        client = PolicyClient("127.0.0.1", port, timeout=10)
        _answers(client)
    time.sleep(0.2)  # the client's reader sees the connection close
    with fake_server(port) as restarted, client:
        _answers(client, 0.25)
        assert client.metadata["pid"] == restarted.pid


def test_a_stopped_server_times_out_naming_the_timeout_then_recovers_when_continued():
    with fake_server() as server:
        client = PolicyClient("127.0.0.1", server.port, timeout=1.5)
        _answers(client)
        server.stop()
        began = time.monotonic()
        named = f"{_url(server.port)}: no reply within the client's timeout of 1.5 s while wait"
        with pytest.raises(PolicyServerTimeout, match=named):
            client.infer(OBSERVATION, "0")
        assert time.monotonic() - began < 5
        with pytest.raises(PolicyServerTimeout, match="timeout of 1.5 s while connecting"):
            PolicyClient("127.0.0.1", server.port, timeout=1.5)  # the kernel accepts, no reply
        server.resume()
        _answers(client)  # a new connection


def test_a_large_request_to_a_stopped_server_times_out_instead_of_blocking():
    """The stopped server stops reading: 48 MB fill the socket buffers; the send is bounded."""
    with fake_server() as server:
        client = PolicyClient("127.0.0.1", server.port, timeout=2)
        _answers(client)
        server.stop()
        raised: list[BaseException] = []

        def send():
            try:
                client.infer({"image_primary": np.zeros((16, 1000, 1000, 3), np.uint8)}, "0")
            except BaseException as error:  # noqa: BLE001 - inspected below
                raised.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(15)
        assert not sender.is_alive(), "the send to a stopped server blocked past the timeout"
        assert isinstance(raised[0], PolicyServerTimeout), raised
        server.resume()
        _answers(client)


def test_a_slow_reply_past_the_timeout_is_never_read_as_the_next_reply():
    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=1) as client:
        _answers(client, 0.25)
        with pytest.raises(PolicyServerTimeout, match="timeout of 1 s"):
            client.infer(OBSERVATION, "2.5")
        time.sleep(2)  # the late reply has been sent by now
        _answers(client, 0.5)  # its own reply, not the late 2.5


def test_a_failed_websocket_handshake_is_named():
    class NotAPolicyServer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # websockets reads no other

        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"not here\r\n")

        def log_message(self, *args):
            pass

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=5) as client:
        _answers(client)
    http_server = http.server.HTTPServer(("127.0.0.1", 0), NotAPolicyServer)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    port = http_server.server_address[1]
    try:
        with pytest.raises(PolicyServerHandshakeFailed, match=f"{_url(port)} refused the "
                           "websocket handshake with HTTP 404: not here") as raised:  # fmt: skip
            PolicyClient("127.0.0.1", port, timeout=5)
        assert raised.value.status == 404
    finally:
        http_server.shutdown()


def test_a_server_that_accepts_and_closes_is_gone():
    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=5) as client:
        _answers(client)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_and_close():
        connection, _ = listener.accept()
        connection.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    try:
        with pytest.raises(
            PolicyServerGone, match=f"{_url(port)} closed the connection .*connecting"
        ):
            PolicyClient("127.0.0.1", port, timeout=5)
    finally:
        listener.close()


def test_wait_for_server_names_the_last_failure():
    with fake_server() as server:
        port = server.port
        with PolicyClient("127.0.0.1", port, timeout=5, wait_for_server=5) as client:
            _answers(client)
    with pytest.raises(PolicyServerUnavailable, match=r"connection refused .*retried for 1 s"):
        PolicyClient("127.0.0.1", port, wait_for_server=1.0)

"""Drill cases (issue 40): the minimal policy client against servers that are absent, killed,
stopped or slow, and a server restarted under a client. The server is the stand-in of
tests/inference/fake_policy_server.py (the wire format, no model: a process that starts in well
under a second and that a case can SIGKILL or SIGSTOP); each case first gets a healthy reply."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from tests.drill.common import case, classify_error, expect_error, one_line

OBSERVATION = {"image_primary": np.zeros((2, 8, 8, 3), np.uint8)}
URL = r"ws://127\.0\.0\.1:\d+"


def _healthy(client, seconds: float = 0.0) -> bool:
    """The fake server answers a request of `seconds` with actions full of `seconds`."""
    return bool(np.all(client.infer(OBSERVATION, f"{seconds}") == seconds))


def _killed_during(client, server):
    """A request the server is SIGKILLed while handling (its second: the first was healthy)."""
    killer = threading.Thread(target=lambda: (server.wait_for_request(2), server.kill()))
    killer.start()
    try:
        return client.infer(OBSERVATION, "30")
    finally:
        killer.join()


@case("client-refused", "client")
def refused(ctx):
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=5) as client:
        assert _healthy(client)
        port = server.port
    return expect_error(
        lambda: PolicyClient("127.0.0.1", port, timeout=5), rf"{URL}.*connection refused"
    )


@case("client-killed-mid-request", "client")
def killed_mid_request(ctx):
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=20) as client:
        assert _healthy(client)
        return expect_error(lambda: _killed_during(client, server), rf"{URL} closed the connection")


@case("client-call-after-server-died", "client")
def call_after_death(ctx):
    """The call after the one the dead server never answered: the broken connection must not be
    reused (it raised the same websockets error again, once per call, forever)."""
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=20) as client:
        assert _healthy(client)
        with contextlib.suppress(Exception):  # client-killed-mid-request classifies this one
            _killed_during(client, server)
        return expect_error(lambda: client.infer(OBSERVATION, "0"), rf"{URL}.*connection refused")


@case("client-stopped-server", "client")
def stopped(ctx):
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=1.5) as client:
        assert _healthy(client)
        server.stop()  # SIGSTOP: the kernel still accepts and buffers, nobody answers
        return expect_error(
            lambda: client.infer(OBSERVATION, "0"), rf"{URL}.*no reply within .*1\.5 s"
        )


@case("client-slow-reply", "client")
def slow(ctx):
    """A reply slower than the timeout is named, and never read as the next call's reply."""
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=1) as client:
        assert _healthy(client)
        outcome, evidence = expect_error(
            lambda: client.infer(OBSERVATION, "2.5"), rf"{URL}.*no reply within .*1 s"
        )
        time.sleep(2)  # the late reply has been sent by now
        try:
            late = client.infer(OBSERVATION, "0.25")
        except Exception as error:  # noqa: BLE001
            return "raw", one_line(f"{evidence}; next call: {type(error).__name__}: {error}")
        if not np.all(late == 0.25):
            return "silent", one_line(f"{evidence}; next call got the late reply {late.ravel()[0]}")
        return outcome, evidence


@case("client-reconnect-after-restart", "client", good="none-needed")
def reconnect(ctx):
    """Killed mid-request, then restarted on its port: the same client's next call answers."""
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=20) as client:
        assert _healthy(client)
        port = server.port
        with contextlib.suppress(Exception):  # client-killed-mid-request classifies this one
            _killed_during(client, server)
        with fake_server(port):
            try:
                ok = _healthy(client, 0.5)
            except Exception as error:  # noqa: BLE001
                return classify_error(error, r"(?!)")  # any error here is a finding
    if ok:
        return (
            "none-needed",
            f"the next call reconnected and answered (reconnects={client.reconnects})",
        )
    return "silent", "the next call after the restart returned another request's reply"


@case("client-timeout-none", "client")
def timeout_none(ctx):
    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    with fake_server() as server:
        with PolicyClient("127.0.0.1", server.port, timeout=5) as client:
            assert _healthy(client)
        return expect_error(
            lambda: PolicyClient("127.0.0.1", server.port, timeout=None),
            r"timeout=None: must be a finite",
            silent_if="connected with no timeout (a stopped server would block it forever)",
        )


@case("client-not-a-policy-server", "client")
def not_a_policy_server(ctx):
    """Something else (plain HTTP) listens on the port."""
    import http.server

    from octo_like.inference.client import PolicyClient
    from tests.inference.fake_policy_server import fake_server

    class NotFound(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with fake_server() as server, PolicyClient("127.0.0.1", server.port, timeout=5) as client:
        assert _healthy(client)
    http_server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    try:
        port = http_server.server_address[1]
        return expect_error(
            lambda: PolicyClient("127.0.0.1", port, timeout=5), rf"{URL}.*handshake.*HTTP 404"
        )
    finally:
        http_server.shutdown()

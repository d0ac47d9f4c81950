"""The minimal client (packages/octo_like_client) works without JAX and waits for a late server."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from octo_like_client import PolicyClient, PolicyServerUnavailable, packb, unpackb, wait_for_health
from websockets.sync.server import serve

CLIENT_SRC = Path(__file__).resolve().parents[2] / "packages" / "octo_like_client" / "src"
HEAVY = ("jax", "jaxlib", "tensorflow", "mujoco", "flax", "octo_like")

# Runs in a fresh interpreter that can import only the client's source and the venv's packages,
# with the heavy modules blocked: any import of them by the client is an error.
NO_JAX_SCRIPT = f"""
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked in the minimal-client test: " + name)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
import octo_like_client
from octo_like_client import PolicyClient, packb, unpackb, wait_for_health
assert octo_like_client.__file__.startswith({str(CLIENT_SRC)!r}), octo_like_client.__file__
tree = unpackb(packb({{"a": np.arange(3, dtype=np.float32)}}))
assert tree["a"].tolist() == [0.0, 1.0, 2.0]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
assert not loaded, loaded
print("ok")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_imports_without_jax(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_JAX_SCRIPT],
        cwd=tmp_path,
        env={"PYTHONPATH": str(CLIENT_SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_main_package_reexports_the_one_client():
    from octo_like.inference import client, wire

    assert client.PolicyClient is PolicyClient
    assert wire.packb is packb


def _start_later(delay: float, start) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), start()), daemon=True)
    thread.start()
    return thread


def test_client_waits_for_a_server_that_starts_late():
    """A server speaking the wire format (metadata on connect, a reply per request) that starts
    listening 2 s after the client began connecting."""
    port = _free_port()
    servers = []

    def handler(connection):
        connection.send(packb({"metadata": {"limits": {}}}))
        for message in connection:
            request = unpackb(message)
            actions = np.zeros((4, 7), np.float32) + len(request["instruction"])
            connection.send(packb({"actions": actions, "latency_ms": 1.0}))

    def start():
        server = serve(handler, "127.0.0.1", port, compression=None)
        servers.append(server)
        server.serve_forever()

    _start_later(2.0, start)
    began = time.monotonic()
    try:
        with PolicyClient("127.0.0.1", port, timeout=10.0, wait_for_server=30.0) as client:
            assert time.monotonic() - began >= 1.5
            assert client.metadata == {"limits": {}}
            chunk = client.infer({"image": np.zeros((1, 8, 8, 3), np.uint8)}, "abc")
            np.testing.assert_array_equal(chunk, np.full((4, 7), 3.0, np.float32))
    finally:
        for server in servers:
            server.shutdown()


def test_wait_for_health_waits_for_a_late_server():
    port = _free_port()
    servers = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    def start():
        server = http.server.HTTPServer(("127.0.0.1", port), Health)
        servers.append(server)
        server.serve_forever()

    _start_later(2.0, start)
    began = time.monotonic()
    try:
        wait_for_health("127.0.0.1", port, timeout=30.0)
        assert time.monotonic() - began >= 1.5
    finally:
        for server in servers:
            server.shutdown()


def test_no_server_times_out_naming_the_url():
    port = _free_port()
    with pytest.raises(PolicyServerUnavailable, match=f"ws://127.0.0.1:{port}"):
        PolicyClient("127.0.0.1", port, wait_for_server=1.0)
    with pytest.raises(PolicyServerUnavailable, match=f"http://127.0.0.1:{port}/healthz"):
        wait_for_health("127.0.0.1", port, timeout=1.0)

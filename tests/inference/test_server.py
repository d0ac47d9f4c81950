"""Policy server round trips on 127.0.0.1 (a free port): metadata on connect, stateless and
session inference, malformed requests answered while the connection keeps serving, /healthz
while a slow inference is running, and the serve_policy script's construction."""

from __future__ import annotations

import pathlib
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from octo_like.inference.server import (
    PolicyClient,
    PolicyServer,
    PolicyServerError,
    check_health,
    packb,
    unpackb,
)
from tests.inference.conftest import HORIZON, PRIMARY, ROBOT_A, ROBOT_P, WINDOW

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))

import serve_policy  # noqa: E402


def window(rng: np.random.Generator, *lead: int) -> dict:
    return {
        "image_primary": rng.integers(0, 255, (*lead, WINDOW, 40, 40, 3), dtype=np.uint8),
        "image_wrist": rng.integers(0, 255, (*lead, WINDOW, 16, 16, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(*lead, WINDOW, ROBOT_P)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def port(policy):
    with PolicyServer(policy, "127.0.0.1", 0).running() as port:
        yield port


def test_packing_round_trips_arrays_and_refuses_pickles():
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": "x", "n": [1, {"b": True}]}
    back = unpackb(packb(tree))
    np.testing.assert_array_equal(back["a"], tree["a"])
    assert back["a"].dtype == np.float32 and back["s"] == "x" and back["n"] == [1, {"b": True}]
    with pytest.raises(ValueError, match="unpickled"):
        unpackb(packb({"evil": np.array([object()], dtype=object)}))


def test_metadata_on_connect_and_inference(policy, port):
    rng = np.random.default_rng(0)
    with PolicyClient("127.0.0.1", port) as client:
        assert client.metadata["cameras"] == policy.metadata()["cameras"]
        assert client.metadata["action_dim"] == ROBOT_A
        single = client.infer(window(rng), "open the drawer")
        assert single.shape == (HORIZON, ROBOT_A) and single.dtype == np.float32
        assert client.last_latency_ms > 0
        batched = client.infer(window(rng, 2), ["open the drawer", "close it"])
        assert batched.shape == (2, HORIZON, ROBOT_A) and np.isfinite(batched).all()
        goal = {"primary": rng.integers(0, 255, (PRIMARY, PRIMARY, 3), dtype=np.uint8)}
        assert client.infer(window(rng), "", goal=goal).shape == (HORIZON, ROBOT_A)
        assert client.server_latency_ms()["count"] >= 3


def test_malformed_requests_get_errors_and_the_connection_keeps_serving(port):
    rng = np.random.default_rng(1)
    with PolicyClient("127.0.0.1", port) as client:
        assert "not valid msgpack" in client.send_raw(b"\xc1\xc1 not msgpack")["error"]
        assert "binary msgpack" in client.send_raw("a text frame")["error"]
        assert "must be a map" in client.send_raw(packb([1, 2]))["error"]
        assert "unknown request" in client.send_raw(packb({"observe": {}}))["error"]
        reply = client.send_raw(packb({"observation": window(rng)}))
        assert "needs 'instruction'" in reply["error"]
        bad = window(rng)
        bad["image_primary"] = bad["image_primary"][..., :2]  # two channels
        with pytest.raises(PolicyServerError, match="'image_primary' must be uint8"):
            client.infer(bad, "open")
        with pytest.raises(PolicyServerError, match="unknown observation key 'image_front'"):
            client.infer({**window(rng), "image_front": bad["image_primary"]}, "open")
        with pytest.raises(PolicyServerError, match="reset"):
            client.step({"proprio": np.zeros(ROBOT_P, np.float32)})
        assert client.infer(window(rng), "open").shape == (HORIZON, ROBOT_A)  # still serving


def test_session_reset_and_step(port):
    rng = np.random.default_rng(2)
    frame = {k: v[-1] for k, v in window(rng).items()}
    with PolicyClient("127.0.0.1", port) as client:
        client.reset("open the drawer")
        actions = [client.step(frame) for _ in range(3)]
        assert all(a.shape == (ROBOT_A,) and a.dtype == np.float32 for a in actions)
        with pytest.raises(PolicyServerError, match="takes 'instruction' and 'goal'"):
            client.request({"reset": {"instructions": "typo"}})


def test_health_answers_while_a_slow_inference_runs(policy):
    class SlowPolicy:
        """Delegates to `policy`; each predict_chunks call takes 1.5 s longer."""

        def __getattr__(self, name):
            return getattr(policy, name)

        def predict_chunks(self, *args):
            time.sleep(1.5)
            return policy.predict_chunks(*args)

    rng = np.random.default_rng(3)
    with PolicyServer(SlowPolicy(), "127.0.0.1", 0).running() as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200 and response.read() == b"ok\n"
        with PolicyClient("127.0.0.1", port) as client:
            done = threading.Event()
            thread = threading.Thread(
                target=lambda: (client.infer(window(rng), "open"), done.set())
            )
            thread.start()
            time.sleep(0.3)
            start = time.perf_counter()
            assert check_health("127.0.0.1", port)
            assert time.perf_counter() - start < 1.0 and not done.is_set()
            thread.join(10)
            assert done.is_set()
    assert not check_health("127.0.0.1", port, timeout=1.0)  # stopped with the block


def test_serve_policy_script_builds_a_server(tiny_checkpoint):
    args = serve_policy.parse_args(
        ["--checkpoint", tiny_checkpoint, "--port", "0", "--execution", "ensemble"]
    )
    server = serve_policy.build_server(args)
    assert server.host == "127.0.0.1" and server.port == 0
    assert server.policy.metadata()["execution"]["mode"] == "ensemble"
    with server.running() as port, PolicyClient("127.0.0.1", port) as client:
        assert client.metadata["execution"]["mode"] == "ensemble"


def test_the_client_side_imports_neither_jax_nor_tensorflow():
    """A robot computer runs the client and the history without the model's dependencies."""
    import subprocess

    code = (
        "import sys\n"
        "from octo_like.inference import ObservationHistory, PolicyClient, RecedingHorizon\n"
        "print(sorted(m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"

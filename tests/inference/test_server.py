"""Policy server round trips on 127.0.0.1 (a free port): metadata on connect, stateless and
session inference, malformed requests answered while the connection keeps serving, /healthz
while a slow inference is running, the serve_policy script's construction, and the bounds
(issue 13): limits in the metadata, batch buckets, a bounded queue answering "busy", work of
departed clients dropped, one-line disconnect logs, token authentication, and a soak test."""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from octo_like.inference.client import (
    PolicyClient,
    PolicyServerBusy,
    PolicyServerError,
    check_health,
)
from octo_like.inference.server import PolicyServer
from octo_like.inference.server_limits import ServerLimits
from octo_like.inference.wire import packb, unpackb
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
        with pytest.raises(PolicyServerError, match=r"unknown observation keys \['image_front'\]"):
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


class SlowPolicy:
    """Delegates to `policy`; each predict_chunks call sleeps `delay` s and records its batch."""

    def __init__(self, policy, delay: float):
        self._policy, self._delay, self.batches = policy, delay, []

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def predict_chunks(self, observations, tasks):
        self.batches.append(len(tasks) if isinstance(tasks, list) else -1)
        time.sleep(self._delay)
        return self._policy.predict_chunks(observations, tasks)


def test_limits_are_in_the_metadata_and_bad_requests_name_the_problem(port):
    rng = np.random.default_rng(4)
    with PolicyClient("127.0.0.1", port) as client:
        limits = client.metadata["limits"]
        assert limits["max_batch"] == 16 and limits["batch_buckets"] == [1, 2, 4, 8, 16]
        tiny = {"image_primary": np.zeros((3000, WINDOW, 1, 1, 3), np.uint8)}
        with pytest.raises(PolicyServerError, match="each side must be in \\[8, 1024\\]"):
            client.infer(tiny, ["x"] * 3000)
        zero = {**window(rng), "image_primary": np.zeros((WINDOW, 0, 0, 3), np.uint8)}
        with pytest.raises(PolicyServerError, match="is 0x0; each side"):
            client.infer(zero, "open")
        big = window(rng, 17)
        with pytest.raises(PolicyServerError, match="batch of 17 windows; .* at most 16"):
            client.infer(big, ["open"] * 17)
        with pytest.raises(PolicyServerError, match="TypeError: 'instruction' must be a string"):
            client.request({"observation": window(rng), "instruction": 5})
        with pytest.raises(PolicyServerError, match="2 instructions for 3 windows"):
            client.infer(window(rng, 3), ["a", "b"])
        with pytest.raises(PolicyServerError, match="an instruction of 600 characters"):
            client.infer(window(rng), "x" * 600)
        floats = {**window(rng), "image_wrist": np.zeros((WINDOW, 16, 16, 3), np.float32)}
        with pytest.raises(PolicyServerError, match="'image_wrist' must be a uint8 numpy array"):
            client.infer(floats, "open")
        assert client.infer(window(rng, 3), ["a", "b", "c"]).shape == (3, HORIZON, ROBOT_A)


def test_proprio_for_a_model_without_proprio_is_refused():
    from octo_like.inference.server_limits import check_inference_request

    metadata = {"cameras": {"primary": [32, 32]}, "proprio_dim": 0, "goal_cameras": {}}
    observation = {"image_primary": np.zeros((2, 32, 32, 3), np.uint8), "proprio": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="reads no proprio"):
        check_inference_request(
            observation, "x", None, single=True, metadata=metadata, limits=ServerLimits()
        )


def test_batches_are_padded_to_buckets(policy):
    slow = SlowPolicy(policy, 0.0)
    rng = np.random.default_rng(5)
    limits = ServerLimits.up_to(6)
    assert limits.batch_buckets == (1, 2, 4, 6)
    server = PolicyServer(slow, "127.0.0.1", 0, limits=limits)
    with server.running() as port, PolicyClient("127.0.0.1", port) as client:
        for batch in (3, 5, 1, 2, 6):
            chunks = client.infer(window(rng, batch), ["open"] * batch)
            assert chunks.shape == (batch, HORIZON, ROBOT_A)
    assert slow.batches == [4, 6, 1, 2, 6]  # only bucket sizes reach the model


def test_a_full_queue_answers_busy_and_departed_clients_work_is_dropped(policy, caplog):
    slow = SlowPolicy(policy, 1.0)
    rng = np.random.default_rng(6)
    server = PolicyServer(slow, "127.0.0.1", 0, limits=ServerLimits(max_queued=2))
    caplog.set_level(logging.INFO, logger="octo_like.inference.server")
    with server.running() as port:
        first, leaver, third = (PolicyClient("127.0.0.1", port) for _ in range(3))
        thread = threading.Thread(target=lambda: first.infer(window(rng), "a"))
        thread.start()
        time.sleep(0.3)
        leaver._connection.send(packb({"observation": window(rng), "instruction": "b"}))
        time.sleep(0.3)  # two queued or running: the third is told to retry
        with pytest.raises(PolicyServerBusy, match="busy: 2 requests are queued or running"):
            third.infer(window(rng), "c")
        leaver.close()  # gone while its request waits behind the first
        thread.join(10)
        time.sleep(0.5)
        assert server.dropped == 1
        assert third.infer(window(rng), "c").shape == (HORIZON, ROBOT_A)  # queue drained
        first.close()
        third.close()
        time.sleep(0.3)
    assert slow.batches == [1, 1]  # the departed client's request never reached the model
    messages = [r.getMessage() for r in caplog.records]
    assert any("went away; its queued request is dropped" in m for m in messages)
    assert sum("disconnected (code" in m for m in messages) == 3
    assert not [r for r in caplog.records if r.exc_info], "a disconnect logged a traceback"


def test_a_token_is_required_when_set(policy):
    from octo_like.inference.client import PolicyServerHandshakeFailed

    with PolicyServer(policy, "127.0.0.1", 0, token="s3cret").running() as port:
        assert check_health("127.0.0.1", port)  # health stays open
        with pytest.raises(PolicyServerHandshakeFailed, match="HTTP 401: missing or wrong token"):
            PolicyClient("127.0.0.1", port, timeout=10)
        with pytest.raises(PolicyServerHandshakeFailed, match="HTTP 401.*token= must match"):
            PolicyClient("127.0.0.1", port, token="wrong", timeout=10)
        with PolicyClient("127.0.0.1", port, token="s3cret") as client:
            assert client.metadata["auth"] == "token"


def test_serve_policy_reads_the_token_and_limits(tiny_checkpoint, tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    args = serve_policy.parse_args(
        ["--checkpoint", tiny_checkpoint, "--port", "0", "--max_batch", "8",
         "--max_queued", "3", "--token_file", str(tmp_path / "token")]
    )  # fmt: skip
    assert serve_policy.read_token(args) == "from-file"
    args.token_file = None
    assert serve_policy.read_token(args, {"OCTO_POLICY_TOKEN": "from-env"}) == "from-env"
    server = serve_policy.build_server(args, environ={})
    assert server.limits.batch_buckets == (1, 2, 4, 8) and server.limits.max_queued == 3
    server.close()  # the port it took before loading the checkpoint


def test_soak_fifty_clients_mixing_valid_and_malformed_requests(tiny_checkpoint):
    """The documented soak command, bounded: the server survives, stays small and answers."""
    out = subprocess.run(
        [sys.executable, str(pathlib.Path(serve_policy.__file__).parent / "soak_policy_server.py"),
         "--checkpoint", tiny_checkpoint, "--clients", "50", "--requests", "6",
         "--max_rss_growth_mb", "500"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    print(out.stdout)
    assert summary["passed"] and summary["server_alive"] and summary["healthz"]
    assert summary["valid_ok"] > 50 and summary["malformed_answered_with_error"] > 30
    assert summary["hung_up"] == 5 and summary["tracebacks_in_server_log"] == 0
    assert summary["latency_ms_p99"] > 0

"""Abusive clients of the policy server, and one well-behaved client whose latency says whether
the abuse reached everyone else: run by the soak (tests/inference/soak.py, behind
scripts/soak_policy_server.py), tests/inference/test_server_abuse.py and the failure drill's
server cases. Test clients, not the product: octo_like/ never imports them.

Each kind is a finding of a hostile test of the server: a message of millions of keys once
stalled every client for 15 s, a message trickled at 64 B/s held its connection forever, each
new image size stalled the model thread for a compile, and connections had no cap. Clients only
talk to the loopback server they are given; every loop is bounded by the soak's end.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import numpy as np

MANY_KEYS = 300_000
MAX_ERROR_CHARS = 2_000
TRICKLE_BYTES_PER_S = 64
FLOOD = 20  # connections opened past the server's limit


def request_window(metadata: dict, rng: np.random.Generator, side: int | None = None) -> dict:
    """A valid request (one window, the instruction) for the server that sent `metadata`;
    `side`: every camera at this square size instead of the model's own."""
    observation = {}
    for camera, size in metadata["cameras"].items():
        edge = side or size[0]
        shape = (metadata["window"], edge, edge, 3)
        observation[f"image_{camera}"] = rng.integers(0, 255, shape, dtype=np.uint8)
    if metadata["proprio_dim"]:
        observation["proprio"] = rng.normal(size=(metadata["window"], metadata["proprio_dim"]))
        observation["proprio"] = observation["proprio"].astype(np.float32)
    return {"observation": observation, "instruction": "pick up the cup"}


def many_keys(port: int, out: dict, done: threading.Event) -> None:
    """Requests with `MANY_KEYS` unknown observation keys: refused, with a short error."""
    from octo_like.inference.client import PolicyClient
    from octo_like.inference.wire import packb

    message = packb({"observation": {f"k{i}": 0 for i in range(MANY_KEYS)}, "instruction": ""})
    out["many_keys_bytes"] = len(message)
    with PolicyClient("127.0.0.1", port, timeout=120) as client:
        while not done.is_set():
            reply = client.send_raw(message)
            out["many_keys_sent"] = out.get("many_keys_sent", 0) + 1
            error = reply.get("error", "")
            out["many_keys_longest_error"] = max(out.get("many_keys_longest_error", 0), len(error))
            if not error:
                out.setdefault("wrong", []).append("many_keys: answered without an error")


def _server_closed(received: bytes) -> bool:
    """Whether the (unmasked) server frames in `received` include a close frame."""
    at = 0
    while at + 2 <= len(received):
        opcode, length = received[at] & 0x0F, received[at + 1] & 0x7F
        header = 2 + {126: 2, 127: 8}.get(length, 0)
        if at + header > len(received):
            return False
        if length >= 126:
            length = int.from_bytes(received[at + 2 : at + header], "big")
        if opcode == 0x8:
            return True
        at += header + length
    return False


def trickle(port: int, out: dict, done: threading.Event, timeout_s: float) -> None:
    """Opens a websocket and sends one binary frame's payload at 64 B/s; records whether and
    when the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    received = received.split(b"\r\n\r\n", 1)[1]  # frames after the handshake
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 20) + os.urandom(4)
    sock.sendall(header)  # a masked binary frame of 1 MiB announced; its bytes trickle
    started, closed_after = time.monotonic(), None
    sock.settimeout(0.25)
    while not done.is_set() and time.monotonic() - started < 10 * timeout_s:
        try:
            sock.sendall(os.urandom(TRICKLE_BYTES_PER_S // 4))
            data = sock.recv(65536)
            received += data
            if not data or _server_closed(received):
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:  # reset by the server: closed
            closed_after = time.monotonic() - started
            break
    sock.close()
    out["trickle_closed_after_s"] = None if closed_after is None else round(closed_after, 2)


def new_sizes(port: int, out: dict, done: threading.Event) -> None:
    """Valid windows at a new image size each time (resized on the host: no compile)."""
    from octo_like.inference.client import PolicyClient
    from octo_like.inference.wire import packb

    rng = np.random.default_rng(7)
    with PolicyClient("127.0.0.1", port, timeout=120) as client:
        side = 40
        while not done.is_set() and side < 400:
            reply = client.send_raw(packb(request_window(client.metadata, rng, side)))
            if "error" in reply and not reply.get("busy"):
                out.setdefault("wrong", []).append(f"new size {side}: {reply['error'][:200]}")
            elif "actions" in reply:
                out["new_sizes_ok"] = out.get("new_sizes_ok", 0) + 1
            side += 7


def flood(port: int, out: dict, done: threading.Event, limit: int) -> None:
    """Opens connections until the server refuses them (HTTP 503), holds them, then leaves."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    held, refused = [], 0
    for _ in range(limit + FLOOD):
        try:
            held.append(connect(f"ws://127.0.0.1:{port}", open_timeout=10, max_size=None))
        except InvalidStatus as error:
            refused += error.response.status_code == 503
        except Exception:  # noqa: BLE001 (counted as not refused)
            pass
        if refused >= 3 or done.is_set():
            break
    out["flood_refused"] = refused
    out["flood_held"] = len(held)
    time.sleep(1.0)
    for connection in held:
        connection.close()


def well_behaved(port: int, out: dict, done: threading.Event) -> None:
    """One valid window at a time at the model's own sizes; its round trips, in ms."""
    from octo_like.inference.client import PolicyClient
    from octo_like.inference.wire import packb

    rng = np.random.default_rng(11)
    latencies = []
    with PolicyClient("127.0.0.1", port, timeout=120) as client:
        while not done.is_set():
            start = time.perf_counter()
            reply = client.send_raw(packb(request_window(client.metadata, rng)))
            while reply.get("busy") and not done.is_set():
                time.sleep(0.05)
                reply = client.send_raw(packb(request_window(client.metadata, rng)))
            if "actions" in reply:
                latencies.append((time.perf_counter() - start) * 1e3)
            elif "error" in reply:
                out.setdefault("wrong", []).append(f"well-behaved refused: {reply['error'][:200]}")
    out["well_behaved_latencies_ms"] = latencies


def start_abusive_clients(
    port: int, *, timeout_s: float, results: dict, lock, done: threading.Event
) -> list[threading.Thread]:
    """Starts every abusive client and the well-behaved one; they stop when `done` is set and
    merge what they saw into `results` under `lock`. `timeout_s`: the server's message
    timeout. (The connection flood runs on its own, `flood`, once the other clients left.)"""
    kinds = [
        (many_keys, ()),
        (trickle, (timeout_s,)),
        (new_sizes, ()),
        (well_behaved, ()),
    ]

    def run(function, extra):
        out: dict = {}
        try:
            function(port, out, done, *extra)
        except Exception as error:  # noqa: BLE001 (reported, the soak goes on)
            out.setdefault("wrong", []).append(f"{function.__name__}: {type(error).__name__}: "
                                               f"{str(error)[:200]}")  # fmt: skip
        with lock:
            for key, value in out.items():
                if isinstance(value, list):
                    results[key] = results.get(key, []) + value
                else:
                    results[key] = value

    threads = [threading.Thread(target=run, args=kind, daemon=True) for kind in kinds]
    for thread in threads:
        thread.start()
    return threads


def summarize(results: dict) -> dict:
    latencies = np.array(results.get("well_behaved_latencies_ms") or [float("nan")])
    return {
        "well_behaved_requests": len(results.get("well_behaved_latencies_ms") or []),
        "well_behaved_latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "well_behaved_latency_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "many_keys_requests": results.get("many_keys_sent", 0),
        "many_keys_mb": round(results.get("many_keys_bytes", 0) / 2**20, 1),
        "many_keys_longest_error_chars": results.get("many_keys_longest_error", 0),
        "trickle_closed_after_s": results.get("trickle_closed_after_s"),
        "new_sizes_ok": results.get("new_sizes_ok", 0),
        "flood_refused": results.get("flood_refused", 0),
    }


def passed(summary: dict) -> bool:
    return (
        summary["well_behaved_requests"] > 0
        and 0 < summary["many_keys_longest_error_chars"] <= MAX_ERROR_CHARS
        and summary["trickle_closed_after_s"] is not None
        and summary["new_sizes_ok"] > 0
        and summary["flood_refused"] > 0
    )


def describe(summary: dict) -> str:
    s = summary
    return (
        f"abusive clients: {s['many_keys_requests']} requests of {MANY_KEYS:,} keys "
        f"({s['many_keys_mb']} MB, longest error {s['many_keys_longest_error_chars']} chars); "
        f"trickled message closed after {s['trickle_closed_after_s']} s; "
        f"{s['new_sizes_ok']} windows at new image sizes answered; {s['flood_refused']} "
        f"connections refused past the limit\n"
        f"well-behaved client: {s['well_behaved_requests']} requests, p50 "
        f"{s['well_behaved_latency_ms_p50']} ms, p99 {s['well_behaved_latency_ms_p99']} ms"
    )

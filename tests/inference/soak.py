"""The policy server's soak, behind scripts/soak_policy_server.py (its docstring says what a run
does and when it fails): serve_policy.py started in its own process, many clients mixing valid
and malformed requests, the abusive clients of tests/inference/abusive_clients.py beside them,
and the server's RSS sampled throughout. Test code, like the clients: the soak is a hostile test
of the server, run by tests/inference/test_server.py and by hand before a deployment."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import numpy as np

from tests.inference import abusive_clients as abuse

SERVE_POLICY = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "serve_policy.py"
MALFORMED = (
    "not_msgpack", "text_frame", "instruction_int", "zero_image", "many_tiny_images",
    "unknown_key", "batch_over_limit", "huge_instruction", "float_images",
)  # fmt: skip


def max_connections(args) -> int:
    """Room for every client of the soak (and the abusive ones), not for the flood."""
    return args.clients + 10


def start_server(args) -> tuple[subprocess.Popen, int, list[str]]:
    """serve_policy.py on a free port; returns the process, its port and its log lines."""
    command = [
        sys.executable, str(SERVE_POLICY), "--checkpoint",
        args.checkpoint, "--port", "0", "--max_queued", str(args.max_queued),
        "--message_timeout_s", str(args.message_timeout_s),
        "--max_connections", str(max_connections(args)),
    ]  # fmt: skip
    env = {**os.environ, "OCTO_POLICY_TOKEN": ""}
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            raise RuntimeError("the server exited during start-up:\n" + "".join(lines[-30:]))
        lines.append(line)
        match = re.search(r"serving policy on ws://[^:]+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()
            return server, int(match.group(1)), lines
    server.kill()
    raise RuntimeError(f"the server did not start within {args.startup_timeout} s")


def valid_request(metadata: dict, rng: np.random.Generator, sides: dict | None = None) -> dict:
    """A batch of 1-4 windows; `sides`: the client's camera sizes (a robot's cameras have a
    fixed size; the model's own by default)."""
    batch = int(rng.integers(1, 5))
    window = metadata["window"]
    observation = {}
    for camera, size in metadata["cameras"].items():
        side = (sides or {}).get(camera, size[0])
        shape = (batch, window, side, side, 3)
        observation[f"image_{camera}"] = rng.integers(0, 255, shape, dtype=np.uint8)
    if metadata["proprio_dim"]:
        shape = (batch, window, metadata["proprio_dim"])
        observation["proprio"] = rng.normal(size=shape).astype(np.float32)
    return {"observation": observation, "instruction": ["pick up the cup"] * batch}


def malformed_request(kind: str, metadata: dict, rng: np.random.Generator):
    from octo_like.inference.wire import packb

    good = valid_request(metadata, rng)
    observation, camera = good["observation"], f"image_{next(iter(metadata['cameras']))}"
    window = metadata["window"]
    if kind == "not_msgpack":
        return b"\xc1\xc1 definitely not msgpack"
    if kind == "text_frame":
        return "a text frame"
    if kind == "instruction_int":
        return packb({"observation": observation, "instruction": 5})
    if kind == "zero_image":
        observation[camera] = np.zeros((1, window, 0, 0, 3), np.uint8)
    elif kind == "many_tiny_images":
        observation = {camera: np.zeros((3000, window, 1, 1, 3), np.uint8)}
    elif kind == "unknown_key":
        observation["image_front_left"] = observation[camera]
    elif kind == "batch_over_limit":
        big = metadata["limits"]["max_batch"] + 1
        observation = {camera: np.zeros((big, window, 16, 16, 3), np.uint8)}
    elif kind == "huge_instruction":
        return packb({"observation": observation, "instruction": "x" * 100_000})
    elif kind == "float_images":
        observation[camera] = observation[camera].astype(np.float32)
    n = next(iter(observation.values())).shape[0]
    return packb({"observation": observation, "instruction": ["pick"] * n})


def run_client(index: int, port: int, args, results: dict, lock: threading.Lock) -> None:
    from octo_like.inference.client import PolicyClient
    from octo_like.inference.wire import packb

    rng = np.random.default_rng(args.seed * 1000 + index)
    hang_up = index < round(args.hangup_fraction * args.clients)
    local = {"latencies_ms": [], "ok": 0, "errors": 0, "busy": 0, "wrong": [], "hung_up": 0}
    try:
        client = PolicyClient("127.0.0.1", port, timeout=120)
    except Exception as e:  # noqa: BLE001  (counted, the soak goes on)
        local["wrong"].append(f"connect: {type(e).__name__}: {e}")
        client = None
    # Each client's cameras have one size: the model's, or one of two others (resized).
    sides = (
        {c: int(rng.choice([size[0], 48, 96])) for c, size in client.metadata["cameras"].items()}
        if client
        else {}
    )
    for number in range(args.requests if client else 0):
        if hang_up and number == args.requests // 2:  # send, then leave without reading
            client._connection.send(packb(valid_request(client.metadata, rng, sides)))
            local["hung_up"] += 1
            break
        malformed = rng.random() < args.malformed_fraction
        kind = str(rng.choice(MALFORMED)) if malformed else "valid"
        data = (
            malformed_request(kind, client.metadata, rng)
            if malformed
            else packb(valid_request(client.metadata, rng, sides))
        )
        start = time.perf_counter()  # latency as the client sees it, busy retries included
        deadline = start + args.retry_seconds
        while True:
            reply = client.send_raw(data)
            if not reply.get("busy") or time.perf_counter() > deadline:
                break
            local["busy"] += 1
            time.sleep(0.05)
        if malformed:
            local["errors"] += "error" in reply
            if "error" not in reply:
                local["wrong"].append(f"{kind}: answered {sorted(reply)}")
        elif "error" in reply:
            local["wrong"].append(f"valid request refused: {reply['error']}")
        else:
            local["ok"] += 1
            local["latencies_ms"].append((time.perf_counter() - start) * 1e3)
    if client is not None:
        client.close()
    with lock:
        for key, value in local.items():
            results[key] = results.get(key, 0 if not isinstance(value, list) else []) + value


def rss_sampler(pid: int, samples: list[float], stop: threading.Event) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            samples.append(process.memory_info().rss / 2**20)
        except psutil.Error:
            return
        stop.wait(0.2)


def _drive(port: int, args) -> tuple[dict, float]:
    """Every client against the server on `port` until each is done: what they saw, and the
    seconds it took. The connection flood comes last, once the regular clients left."""
    results: dict = {}
    lock = threading.Lock()
    started = time.perf_counter()
    threads = [
        threading.Thread(target=run_client, args=(i, port, args, results, lock))
        for i in range(args.clients)
    ]
    done = threading.Event()
    abusive = abuse.start_abusive_clients(
        port, timeout_s=args.message_timeout_s, results=results, lock=lock, done=done
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flooded: dict = {}  # past the connection limit, once the regular clients left
    abuse.flood(port, flooded, done, max_connections(args))
    results.update(flooded)
    done.set()
    for thread in abusive:
        thread.join()
    return results, time.perf_counter() - started


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:  # JAX may ignore SIGTERM
        server.kill()


def run_soak(args) -> dict:
    """One soak with the settings of scripts/soak_policy_server.py's command line: the summary
    (counts, latencies, RSS, the abusive clients' results) with `passed` last."""
    from octo_like.inference.client import check_health

    server, port, log_lines = start_server(args)
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=rss_sampler, args=(server.pid, samples, stop), daemon=True)
    sampler.start()
    time.sleep(0.5)
    rss_start = samples[-1] if samples else float("nan")
    try:
        results, seconds = _drive(port, args)
        time.sleep(1.0)  # the hung-up clients' requests finish or are dropped
        healthy = check_health("127.0.0.1", port, timeout=10)
        alive = server.poll() is None
    finally:
        stop.set()
        sampler.join()
        _stop(server)
    latencies = np.array(results.get("latencies_ms", []) or [float("nan")])
    log_text = "".join(log_lines)
    summary = {
        "clients": args.clients,
        "requests": args.clients * args.requests,
        "seconds": round(seconds, 2),
        "valid_ok": results.get("ok", 0),
        "malformed_answered_with_error": results.get("errors", 0),
        "busy_answers": results.get("busy", 0),
        "hung_up": results.get("hung_up", 0),
        "wrong": results.get("wrong", [])[:10],
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_peak": round(max(samples, default=float("nan")), 1),
        "rss_mb_end": round(samples[-1] if samples else float("nan"), 1),
        "server_alive": alive,
        "healthz": healthy,
        "tracebacks_in_server_log": log_text.count("Traceback"),
        "dropped_logged": log_text.count("its queued request is dropped"),
        **abuse.summarize(results),
    }
    growth = summary["rss_mb_peak"] - summary["rss_mb_start"]
    summary["passed"] = bool(
        alive
        and healthy
        and not summary["wrong"]
        and summary["tracebacks_in_server_log"] == 0
        and growth <= args.max_rss_growth_mb
        and abuse.passed(summary)
    )
    return summary


def describe(summary: dict, max_rss_growth_mb: float) -> str:
    """The soak's table: what a person reads before the JSON line."""
    s = summary
    growth = s["rss_mb_peak"] - s["rss_mb_start"]
    return "\n".join([
        f"{s['requests']} requests from {s['clients']} clients in {s['seconds']:.1f} s",
        f"valid answered: {s['valid_ok']}, malformed answered with an error: "
        f"{s['malformed_answered_with_error']}, busy answers: {s['busy_answers']}",
        f"round-trip latency of valid requests: p50 {s['latency_ms_p50']} ms, "
        f"p99 {s['latency_ms_p99']} ms",
        abuse.describe(s),
        f"server RSS: {s['rss_mb_start']} MB at start, peak {s['rss_mb_peak']} MB "
        f"(+{growth:.0f} MB, bound {max_rss_growth_mb:.0f}), end {s['rss_mb_end']} MB",
    ])  # fmt: skip

"""Serve a `Policy` over websockets to a robot computer, and the client it uses.

Protocol: every message is one binary websocket frame holding a msgpack map; numpy arrays use
msgpack-numpy's encoding (object and structured arrays are refused on decode: msgpack-numpy
would unpickle them, i.e. run code from the network).

    server -> client on connect   {"metadata": Policy.metadata()}
    {"observation": window, "instruction": str | [str], "goal"?: {camera: uint8[(b,) h, w, 3]}}
                               -> {"actions": float32[(b,) H, A], "latency_ms": float}
    {"reset": {"instruction"?: str, "goal"?: {camera: uint8[h, w, 3]}}}  -> {"reset": True}
    {"frame": {key: array}}    -> {"action": float32[A], "latency_ms": float}   (after reset)
    {"metadata": True}         -> {"metadata": ..., "latency_ms": Policy.latency_ms()}
    anything malformed         -> {"error": "ValueError: observation 'image_primary' ..."}

`observation` requests are stateless: a window ``{image_<camera>: uint8[(b,) W, h, w, 3],
proprio: float32[(b,) W, P], ...}``, with or without the batch axis (the reply matches).
`reset` / `frame` drive a per-connection `PolicySession` (history and chunk execution on the
server, with the server's `--execution` settings), for a robot that sends one frame per step.

Inference runs in a worker thread (`asyncio.to_thread`), so the event loop keeps answering
pings and ``GET /healthz`` (plain HTTP, "ok") during a long call. A failed request is answered
with an error and the connection keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.sync.client import connect

from octo_like.inference.history import add_batch_axis, is_batched

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
MAX_MESSAGE_BYTES = 64 * 2**20  # a batch of full-size camera windows fits; websockets' 1 MiB not


def _decode(obj: dict) -> Any:
    if obj.get(b"nd") is True and obj.get(b"kind") in (b"O", b"V"):
        raise ValueError("object and structured arrays are not accepted (they would be unpickled)")
    return msgpack_numpy.decode(obj)


def packb(obj: Any) -> bytes:
    """msgpack bytes of a tree of dicts, lists, scalars, strings and numpy arrays."""
    return msgpack.packb(obj, default=msgpack_numpy.encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Inverse of `packb`; arrays come back as read-only numpy arrays."""
    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)


class PolicyServer:
    """Serves one `Policy` (shared by all connections; model calls are serialized)."""

    def __init__(
        self,
        policy,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.policy = policy
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes

    # ------------------------------------------------------------------ running
    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Serves until cancelled; `ready` (if given) is called with the bound port.

        ``port=0`` binds a free port.
        """
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            compression=None,  # images do not deflate well; it only costs latency
        ) as server:
            port = _bound_port(server)
            log.info("serving policy on ws://%s:%d (health: %s)", self.host, port, HEALTH_PATH)
            if ready is not None:
                ready(port)
            await server.serve_forever()

    def serve_forever(self) -> None:
        """Blocks serving (Ctrl-C stops)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[int]:
        """Serves in a background thread for the duration of the block; yields the port."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        ports: list[int] = []
        failures: list[BaseException] = []
        task = loop.create_task(self.serve(lambda port: (ports.append(port), started.set())))

        def run() -> None:
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # e.g. the port is taken: reported to the caller
                failures.append(e)
                started.set()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="policy-server", daemon=True)
        thread.start()
        if not started.wait(timeout):
            raise RuntimeError(f"the policy server did not start within {timeout} s")
        if failures:
            raise failures[0]
        try:
            yield ports[0]
        finally:
            loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout)

    # ------------------------------------------------------------------ protocol
    def _process_request(self, connection: ServerConnection, request):
        if request.path == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None  # continue with the websocket handshake

    async def _handle(self, connection: ServerConnection) -> None:
        session = self.policy.new_session()
        peer = connection.remote_address
        log.info("client %s connected", peer)
        await connection.send(packb({"metadata": self.policy.metadata()}))
        async for message in connection:
            try:
                reply = await self._reply(message, session)
            except Exception as e:  # answer and keep serving, whatever went wrong
                log.warning("request from %s failed: %s: %s", peer, type(e).__name__, e)
                reply = {"error": f"{type(e).__name__}: {e}"}
            await connection.send(packb(reply))
        log.info("client %s disconnected", peer)

    async def _reply(self, message, session) -> dict[str, Any]:
        if isinstance(message, str):
            raise TypeError("send binary msgpack messages, not text")
        try:
            request = unpackb(message)
        except Exception as e:
            raise ValueError(f"the message is not valid msgpack ({type(e).__name__}: {e})") from e
        if not isinstance(request, Mapping):
            raise TypeError(f"a request must be a map, got {type(request).__name__}")
        if "observation" in request:
            return await self._infer(request)
        if "frame" in request:
            start = time.perf_counter()
            action = await asyncio.to_thread(session.step, _as_dict(request["frame"], "frame"))
            return {"action": action, "latency_ms": (time.perf_counter() - start) * 1e3}
        if "reset" in request:
            options = _as_dict(request["reset"] or {}, "reset")
            unknown = sorted(set(options) - {"instruction", "goal"})
            if unknown:
                raise ValueError(f"reset takes 'instruction' and 'goal', got {unknown}")
            await asyncio.to_thread(session.reset, options.get("instruction"), options.get("goal"))
            return {"reset": True}
        if "metadata" in request:
            return {"metadata": self.policy.metadata(), "latency_ms": self.policy.latency_ms()}
        raise ValueError(
            f"unknown request with keys {sorted(request)}; expected 'observation', 'frame', "
            "'reset' or 'metadata'"
        )

    async def _infer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        observation = _as_dict(request["observation"], "observation")
        if "instruction" not in request:
            raise ValueError("an observation request needs 'instruction' (\"\" for none)")
        instruction = request["instruction"]
        goal = request.get("goal")
        single = not is_batched(observation)
        if single:
            observation = add_batch_axis(observation)
            goal = None if goal is None else {k: np.asarray(v)[None] for k, v in goal.items()}

        def predict() -> np.ndarray:
            batch = np.shape(next(iter(_leaves(observation))))[0]
            texts = [instruction] * batch if isinstance(instruction, str) else list(instruction)
            tasks = self.policy.create_tasks(texts, goal) if goal is not None else texts
            return self.policy.predict_chunks(observation, tasks)

        start = time.perf_counter()
        actions = await asyncio.to_thread(predict)
        latency = (time.perf_counter() - start) * 1e3
        return {"actions": actions[0] if single else actions, "latency_ms": latency}


def _as_dict(value, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what!r} must be a map of arrays, got {type(value).__name__}")
    return dict(value)


def _leaves(tree: Mapping[str, Any]) -> Iterator[Any]:
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        else:
            yield value


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


# ---------------------------------------------------------------------- client
class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


class PolicyClient:
    """A synchronous client (e.g. on the robot computer); `metadata` arrives on connect.

    with PolicyClient("127.0.0.1", 8000) as client:
        chunk = client.infer(window, "open the drawer")   # float32[H, A]
        client.reset("open the drawer"); action = client.step(frame)  # float32[A]
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.uri = f"ws://{host}:{port}"
        self._connection = connect(
            self.uri, open_timeout=timeout, max_size=max_message_bytes, compression=None
        )
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
        """Sends one request; raises `PolicyServerError` if the server answers an error."""
        reply = self.send_raw(packb(dict(message)))
        if "error" in reply:
            raise PolicyServerError(reply["error"])
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


def check_health(host: str = "127.0.0.1", port: int = 8000, timeout: float = 5.0) -> bool:
    """True when ``GET /healthz`` answers 200 (the server is up and its loop responsive)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", HEALTH_PATH)
        return connection.getresponse().status == http.HTTPStatus.OK
    except OSError:
        return False
    finally:
        connection.close()

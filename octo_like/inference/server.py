"""Serve a `Policy` over websockets to a robot computer, within stated limits.

Protocol (wire format in `wire.py`, the client in `client.py`):

    server -> client on connect   {"metadata": Policy.metadata() + {"limits": ServerLimits}}
    {"observation": window, "instruction": str | [str], "goal"?: {camera: uint8[(b,) h, w, 3]}}
                               -> {"actions": float32[(b,) H, A], "latency_ms": float}
    {"reset": {"instruction"?: str, "goal"?: {camera: uint8[h, w, 3]}}}  -> {"reset": True}
    {"frame": {key: array}}    -> {"action": float32[A], "latency_ms": float}   (after reset)
    {"metadata": True}         -> {"metadata": ..., "latency_ms": Policy.latency_ms(),
                                   "stats": {"refused": {error type: count}, "dropped": n}}
    anything malformed         -> {"error": "ValueError: observation 'image_primary' ..."}
    queue full                 -> {"error": "busy: ...", "busy": True}

`observation` requests are stateless: a window ``{image_<camera>: uint8[(b,) W, h, w, 3],
proprio: float32[(b,) W, P], ...}``, with or without the batch axis (the reply matches).
`reset` / `frame` drive a per-connection `PolicySession` (history and chunk execution on the
server, with the server's `--execution` settings), for a robot that sends one frame per step.

Bounded (`server_limits.ServerLimits`, all in the metadata): a request is checked before any
model work (batch size, image sides, keys, types, instruction length); batches are padded to a
few compiled buckets; messages above `max_request_bytes` close the connection (code 1009)
without being buffered further. Model work runs on one worker thread, in order; at most
`max_queued` requests wait or run at once and the rest are answered "busy" at once. A request
whose client disconnects while it waits is dropped; each disconnect is one log line. With a
`token`, the websocket handshake needs ``Authorization: Bearer <token>`` (TLS: put a reverse
proxy in front, see docs/inference.md). ``GET /healthz`` (plain HTTP, "ok") is always open and is
answered during a long inference.

Abuse stays contained: messages are decoded and checked on two parser threads, never on the
event loop, and errors list at most ten keys; images of any size are resized on the host (no
compile); every batch bucket is compiled before the first client (`prewarm`); connections past
`max_connections` get HTTP 503; a message unfinished after `message_timeout_s` closes its
connection (`server_connection.py`); NaN/Inf inputs and actions are refused (`finite.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import http
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from octo_like.inference.client import (  # noqa: F401  (the client API, re-exported)
    PolicyClient,
    PolicyServerBusy,
    PolicyServerError,
    check_health,
)
from octo_like.inference.server_connection import GuardedConnection, watch_unfinished
from octo_like.inference.server_limits import ServerLimits, pad_batch
from octo_like.inference.server_requests import (
    Frame,
    Inference,
    Metadata,
    Request,
    Reset,
    parse_request,
)
from octo_like.inference.wire import HEALTH_PATH, TOKEN_HEADER, packb

log = logging.getLogger(__name__)


class ServerBusy(RuntimeError):
    """`max_queued` model requests are already waiting or running."""


class ClientGone(Exception):
    """The client disconnected while its request waited."""


class PolicyServer:
    """Serves one `Policy` (shared by all connections; model calls run one at a time)."""

    def __init__(
        self,
        policy,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        limits: ServerLimits | None = None,
        token: str | None = None,
        prewarm: bool = True,
        sock: socket.socket | None = None,
    ):
        """`prewarm`: compile every batch bucket before accepting clients, so no client's
        first request of a new batch size blocks the others for a compile. `sock`: a socket
        already bound to `host`:`port` (`server_socket.bind_server_socket`, taken before the
        checkpoint loaded) that the server listens on and closes; None binds at `serve`."""
        self.policy = policy
        self._sock = sock
        self.prewarm = prewarm
        self._connections = 0  # open websocket connections (event loop only)
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self._token = token or None
        self._metadata = {**policy.metadata(), "limits": self.limits.to_dict()}
        self._metadata["auth"] = "token" if self._token else "none"
        self._worker: ThreadPoolExecutor | None = None
        self._pending = 0  # model requests queued or running (touched on the event loop only)
        self.dropped = 0  # requests dropped because their client went away
        # Refused requests by error type (ValueError, NonFiniteActions, ...), in `stats()`.
        self.refused: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ running
    async def serve(
        self,
        ready: Callable[[int], None] | None = None,
        compiled: Callable[[], None] | None = None,
    ) -> None:
        """Serves until cancelled; `ready` (if given) is called with the bound port, and
        `compiled` (if given) once the batch buckets are compiled (at once without prewarm),
        before binding.

        ``port=0`` binds a free port.
        """
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="policy-model")
        # Decoding and checking messages: off the event loop, beside the model thread.
        self._parser = ThreadPoolExecutor(2, thread_name_prefix="policy-requests")
        try:
            if self.prewarm:
                loop = asyncio.get_running_loop()
                started = time.perf_counter()
                for bucket in self.limits.batch_buckets:
                    await loop.run_in_executor(self._worker, self.policy.warmup, bucket)
                log.info(
                    "compiled batch buckets %s in %.1f s", list(self.limits.batch_buckets),
                    time.perf_counter() - started,
                )  # fmt: skip
            if compiled is not None:
                compiled()
            where = {"sock": self._sock} if self._sock else {"host": self.host, "port": self.port}
            async with serve(
                self._handle,
                **where,
                process_request=self._process_request,
                max_size=self.limits.max_request_bytes,
                compression=None,  # images do not deflate well; it only costs latency
                create_connection=GuardedConnection,
            ) as server:
                port = _bound_port(server)
                log.info(
                    "serving policy on ws://%s:%d (health: %s, auth: %s, limits: %s)",
                    self.host, port, HEALTH_PATH, self._metadata["auth"], self.limits.to_dict(),
                )  # fmt: skip
                if ready is not None:
                    ready(port)
                await server.serve_forever()
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._parser.shutdown(wait=False, cancel_futures=True)
            self.close()

    def close(self) -> None:
        """Releases the port of a server given a bound `sock` (serving closes it too)."""
        if self._sock is not None:
            self._sock.close()

    def serve_forever(self) -> None:
        """Blocks serving (Ctrl-C stops)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0, compile_timeout: float = 900.0) -> Iterator[int]:
        """Serves in a background thread for the duration of the block; yields the port.

        `compile_timeout` bounds the prewarm (one compile per batch bucket: minutes on a busy
        CPU host), `timeout` the bind after it; either running out raises, naming which.
        """
        loop = asyncio.new_event_loop()
        compiled, started = threading.Event(), threading.Event()
        ports: list[int] = []
        failures: list[BaseException] = []
        task = loop.create_task(
            self.serve(lambda port: (ports.append(port), started.set()), compiled.set)
        )

        def run() -> None:
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # e.g. the port is taken: reported to the caller
                failures.append(e)
                compiled.set()
                started.set()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="policy-server", daemon=True)
        thread.start()
        buckets = list(self.limits.batch_buckets)
        for event, seconds, what in (
            (compiled, compile_timeout, f"compile its batch buckets {buckets}"),
            (started, timeout, "start"),
        ):
            if not event.wait(seconds):
                loop.call_soon_threadsafe(task.cancel)
                raise RuntimeError(f"the policy server did not {what} within {seconds} s")
        if failures:
            raise failures[0]
        try:
            yield ports[0]
        finally:
            loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout)

    # ------------------------------------------------------------------ connections
    def _process_request(self, connection: ServerConnection, request):
        if request.path == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if self._connections >= self.limits.max_connections:
            self.refused["connections"] += 1
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"{self._connections} connections open (limit "
                f"{self.limits.max_connections}); retry later\n",
            )
        if self._token is not None:
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                log.warning("refused %s: missing or wrong token", connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        return None  # continue with the websocket handshake

    async def _handle(self, connection: GuardedConnection) -> None:
        session = self.policy.new_session()
        peer = connection.remote_address
        log.info("client %s connected", peer)
        self._connections += 1
        watchdog = asyncio.create_task(watch_unfinished(connection, self.limits.message_timeout_s))
        try:
            await connection.send(packb({"metadata": self._metadata}))
            async for message in connection:
                try:
                    reply = await self._reply(message, session, connection)
                except ClientGone:
                    break
                except ServerBusy as e:
                    self.refused["busy"] += 1
                    reply = {"error": f"busy: {e}", "busy": True}
                except Exception as e:  # answer and keep serving, whatever went wrong
                    self.refused[type(e).__name__] += 1
                    log.info("request from %s refused: %s: %s", peer, type(e).__name__, e)
                    reply = {"error": f"{type(e).__name__}: {e}"}
                await connection.send(packb(reply))
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self._connections -= 1
        code = connection.close_code
        reason = connection.close_reason
        log.info("client %s disconnected (code %s%s)", peer, code, f": {reason}" if reason else "")

    async def _run_model(self, connection: ServerConnection, work: Callable[[], Any]) -> Any:
        """Runs `work` on the model thread after the requests queued before it; raises
        `ServerBusy` when `max_queued` are already waiting and `ClientGone` (dropping the
        work if it has not started) when the client disconnects meanwhile."""
        if self._pending >= self.limits.max_queued:
            raise ServerBusy(
                f"{self._pending} requests are queued or running (limit "
                f"{self.limits.max_queued}); retry later"
            )
        cancelled = threading.Event()

        def job():
            return None if cancelled.is_set() else work()

        loop = asyncio.get_running_loop()
        self._pending += 1
        future = loop.run_in_executor(self._worker, job)
        future.add_done_callback(lambda _: self._release())
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            done, _ = await asyncio.wait({future, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if future not in done:
            cancelled.set()
            self.dropped += 1
            peer = connection.remote_address
            log.info("client %s went away; its queued request is dropped", peer)
            raise ClientGone()
        return future.result()

    def stats(self) -> dict[str, Any]:
        """Requests refused (by error type) and dropped (client gone) since the start."""
        return {"refused": dict(self.refused), "dropped": self.dropped}

    def _release(self) -> None:
        self._pending -= 1

    # ------------------------------------------------------------------ protocol
    async def _reply(self, message, session, connection) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        request: Request = await loop.run_in_executor(
            self._parser, parse_request, message, self._metadata, self.limits
        )
        start = time.perf_counter()
        if isinstance(request, Inference):
            actions = await self._run_model(connection, lambda: self._predict(request))
            latency = (time.perf_counter() - start) * 1e3
            return {"actions": actions[0] if request.single else actions, "latency_ms": latency}
        if isinstance(request, Frame):
            action = await self._run_model(connection, lambda: session.step(request.frame))
            return {"action": action, "latency_ms": (time.perf_counter() - start) * 1e3}
        if isinstance(request, Reset):
            await self._run_model(
                connection, lambda: session.reset(request.instruction, request.goal)
            )
            return {"reset": True}
        assert isinstance(request, Metadata)
        return {
            "metadata": self._metadata,
            "latency_ms": self.policy.latency_ms(),
            "stats": self.stats(),
        }

    def _predict(self, request: Inference) -> np.ndarray:
        """On the model thread: the batch padded to its bucket (a few compiled shapes)."""
        bucket = self.limits.bucket(request.batch)
        goal = None if request.goal is None else pad_batch(request.goal, bucket)
        tasks = pad_batch(request.texts, bucket)
        if goal is not None:
            tasks = self.policy.create_tasks(tasks, goal)
        observation = pad_batch(request.observation, bucket)
        return self.policy.predict_chunks(observation, tasks)[: request.batch]


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])

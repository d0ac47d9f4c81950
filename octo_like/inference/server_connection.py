"""A websocket connection that knows how long its current message has been arriving.

A client that trickles a message (64 bytes a second) holds its connection, and the bytes
buffered so far, forever: the websocket layer has no per-message deadline. `GuardedConnection`
records when the connection last started a message it has not finished (bytes of a frame
still buffered, or a fragmented message without its final frame), and `watch_unfinished`
closes the connection (code 1008, policy violation) once that exceeds the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class GuardedConnection(ServerConnection):
    """`ServerConnection` plus `unfinished_since` (monotonic seconds, or None)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unfinished_since: float | None = None
        self._fragmented = False  # a data frame without FIN arrived; its message is open

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        pending = bool(self.protocol.reader.buffer) or self._fragmented
        if not pending:
            self.unfinished_since = None
        elif self.unfinished_since is None:
            self.unfinished_since = time.monotonic()

    def process_event(self, event) -> None:
        if isinstance(event, Frame) and event.opcode in _DATA:
            self._fragmented = not event.fin
        super().process_event(event)


async def watch_unfinished(connection: GuardedConnection, timeout_s: float) -> None:
    """Closes `connection` when a message stays unfinished longer than `timeout_s`."""
    period = min(1.0, timeout_s / 4)
    while True:
        await asyncio.sleep(period)
        started = connection.unfinished_since
        if started is not None and time.monotonic() - started > timeout_s:
            log.info(
                "closing %s: a message unfinished after %.0f s", connection.remote_address,
                timeout_s,
            )  # fmt: skip
            await connection.close(
                POLICY_VIOLATION, f"message not completed within {timeout_s:g} s"
            )
            return

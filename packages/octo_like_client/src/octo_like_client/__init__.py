"""The policy server's client, installable alone: numpy, websockets, msgpack, msgpack-numpy."""

from octo_like_client.client import (
    PolicyClient,
    PolicyServerBusy,
    PolicyServerError,
    PolicyServerUnavailable,
    check_health,
    wait_for_health,
)
from octo_like_client.wire import HEALTH_PATH, TOKEN_HEADER, packb, unpackb

__all__ = [
    "HEALTH_PATH",
    "TOKEN_HEADER",
    "PolicyClient",
    "PolicyServerBusy",
    "PolicyServerError",
    "PolicyServerUnavailable",
    "check_health",
    "packb",
    "unpackb",
    "wait_for_health",
]

"""The policy server's client, installable alone: numpy, websockets, msgpack, msgpack-numpy."""

from octo_like_client.client import DEFAULT_TIMEOUT_S, PolicyClient, check_health, wait_for_health
from octo_like_client.errors import (
    PolicyClientSettingError,
    PolicyServerBusy,
    PolicyServerError,
    PolicyServerGone,
    PolicyServerHandshakeFailed,
    PolicyServerRefused,
    PolicyServerTimeout,
    PolicyServerUnavailable,
)
from octo_like_client.wire import HEALTH_PATH, TOKEN_HEADER, packb, unpackb

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HEALTH_PATH",
    "TOKEN_HEADER",
    "PolicyClient",
    "PolicyClientSettingError",
    "PolicyServerBusy",
    "PolicyServerError",
    "PolicyServerGone",
    "PolicyServerHandshakeFailed",
    "PolicyServerRefused",
    "PolicyServerTimeout",
    "PolicyServerUnavailable",
    "check_health",
    "packb",
    "unpackb",
    "wait_for_health",
]

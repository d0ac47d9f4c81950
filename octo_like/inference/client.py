"""Re-exports `octo_like_client.client` (packages/octo_like_client), the one copy of the client,
with its named errors (`octo_like_client.errors`)."""

from octo_like_client.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_S,
    PolicyClient,
    check_health,
    wait_for_health,
)
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

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
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
    "wait_for_health",
]

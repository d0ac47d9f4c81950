"""Re-exports `octo_like_client.client` (packages/octo_like_client), the one copy of the client."""

from octo_like_client.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    PolicyClient,
    PolicyServerBusy,
    PolicyServerError,
    PolicyServerUnavailable,
    check_health,
    wait_for_health,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "PolicyClient",
    "PolicyServerBusy",
    "PolicyServerError",
    "PolicyServerUnavailable",
    "check_health",
    "wait_for_health",
]

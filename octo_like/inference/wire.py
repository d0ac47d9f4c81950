"""Re-exports `octo_like_client.wire` (packages/octo_like_client), the one copy of the format."""

from octo_like_client.wire import HEALTH_PATH, TOKEN_HEADER, packb, unpackb

__all__ = ["HEALTH_PATH", "TOKEN_HEADER", "packb", "unpackb"]

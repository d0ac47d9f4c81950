"""The client's errors: every way a policy server can fail to answer, each naming the URL.

    PolicyClientSettingError (ValueError)  a `PolicyClient` argument is unusable (timeout=None)
    PolicyServerUnavailable (TimeoutError) no answer from the URL; trying again later may help
      PolicyServerRefused                  nothing listens at host:port (connection refused)
      PolicyServerGone                     the connection closed with no reply: the server was
                                           killed or restarted, the network dropped
      PolicyServerTimeout                  no reply within the client's `timeout`: the server is
                                           stopped (SIGSTOP, a debugger), hung, or slower
    PolicyServerError (RuntimeError)       the server answered with an error
      PolicyServerBusy                     its queue is full; retry later
      PolicyServerHandshakeFailed          the websocket handshake failed: an HTTP error status
                                           (401 wrong token, 503 too many connections), TLS, or
                                           something other than a policy server at that URL

`PolicyServerUnavailable` stays a `TimeoutError` (an `OSError`) because `wait_for_health` and
`wait_for_server` raised it before the subclasses existed; code catching either keeps working.
"""

from __future__ import annotations

import math
import ssl

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)

RECONNECTS = "the connection is dropped; the next call opens a new one"
_STATUS_HINTS = {
    401: "the client's token= must match the server's --token_file / OCTO_POLICY_TOKEN",
    503: "the server's max_connections are all in use; retry later",
}


class PolicyClientSettingError(ValueError):
    """A `PolicyClient` (or health check) argument cannot work, e.g. a timeout that never ends."""


class PolicyServerUnavailable(TimeoutError):
    """No server answered at the URL (within the wait)."""


class PolicyServerRefused(PolicyServerUnavailable):
    """Nothing listens at the URL: the server is not running (yet), or runs elsewhere."""


class PolicyServerGone(PolicyServerUnavailable):
    """The connection closed before the reply came: the server died, restarted or hung up."""


class PolicyServerTimeout(PolicyServerUnavailable):
    """No reply within the client's timeout: the server is stopped, hung, or too slow."""


class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


class PolicyServerBusy(PolicyServerError):
    """The server's queue is full; retry later."""


class PolicyServerHandshakeFailed(PolicyServerError):
    """The websocket handshake failed; `status` is the HTTP status when the server sent one.
    Not a `PolicyServerUnavailable`: waiting does not fix a wrong token or a wrong port."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def checked_seconds(name: str, value: object, *, zero_ok: bool = False) -> float:
    """`value` as seconds, refusing None, NaN, infinity and negatives (and 0 unless `zero_ok`):
    a client without a finite timeout waits forever on a stopped server."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))
    if not ok:
        bound = ">= 0" if zero_ok else "> 0"
        raise PolicyClientSettingError(
            f"{name}={value!r}: must be a finite number of seconds {bound} (a client that "
            "waits forever never notices a stopped or hung server)"
        )
    return float(value)


def _status_error(uri: str, error: InvalidStatus) -> PolicyServerHandshakeFailed:
    status = error.response.status_code
    body = error.response.body.decode(errors="replace").strip()[:200] if error.response.body else ""
    hint = _STATUS_HINTS.get(status, "is an octo_like policy server listening at that port?")
    detail = f": {body}" if body else ""
    return PolicyServerHandshakeFailed(
        f"{uri} refused the websocket handshake with HTTP {status}{detail} ({hint})", status
    )


def named_error(uri: str, error: BaseException, *, timeout: float, doing: str) -> Exception | None:
    """The client error for `error`, raised by websockets or the socket while `doing` (e.g.
    "connecting", "waiting for the reply"); None for errors that are not the server's (bugs)."""
    if isinstance(error, InvalidURI):
        return PolicyClientSettingError(f"{uri} is not a usable websocket URL: {error.msg}")
    if isinstance(error, InvalidStatus):
        return _status_error(uri, error)
    tail = "" if doing == "connecting" else f"; {RECONNECTS}"

    def gone(detail: object) -> PolicyServerGone:
        return PolicyServerGone(
            f"{uri} closed the connection with no reply while {doing} ({detail}): the server was "
            f"killed or restarted, or the network dropped{tail}"
        )

    if isinstance(error, InvalidMessage) and isinstance(error.__cause__, EOFError | OSError):
        return gone(f"websocket handshake: {error.__cause__}")
    if isinstance(error, InvalidHandshake):
        cause = f" ({error.__cause__})" if error.__cause__ else ""
        return PolicyServerHandshakeFailed(
            f"websocket handshake with {uri} failed: {type(error).__name__}: {error}{cause} "
            "(is an octo_like policy server listening at that port?)"
        )
    if isinstance(error, ssl.SSLError):  # before OSError: SSLError is one
        return PolicyServerHandshakeFailed(f"TLS handshake with {uri} failed: {error}")
    if isinstance(error, TimeoutError) or (
        isinstance(error, ConnectionClosed) and isinstance(error.__cause__, TimeoutError)
    ):
        return PolicyServerTimeout(
            f"{uri}: no reply within the client's timeout of {timeout:g} s while {doing}: the "
            f"server process is stopped, hung or slower than that{tail}"
        )
    if isinstance(error, ConnectionClosed | ConnectionResetError | BrokenPipeError):
        return gone(error)
    if isinstance(error, ConnectionRefusedError):
        return PolicyServerRefused(
            f"nothing listens at {uri}: connection refused (is the server running on that host "
            "and port? a server still loading its checkpoint listens only when ready: "
            "wait_for_server= or wait_for_health() wait for it)"
        )
    if isinstance(error, OSError):  # unknown host, no route, network down
        return PolicyServerUnavailable(f"cannot reach {uri}: {type(error).__name__}: {error}")
    return None

"""The policy server's port, taken before its checkpoint loads.

Loading and compiling a checkpoint takes tens of seconds (~36 s for the laptop model on a
2-core host); a port already in use used to be reported only after that. `bind_server_socket`
binds the port first and the server later listens on that very socket, so the port cannot be
taken in between. The socket is bound but not listening while the model loads: a client
connecting early is refused (and retries with ``wait_for_server``) rather than left hanging in
the accept queue.
"""

from __future__ import annotations

import errno
import socket


class ServerStartError(OSError):
    """The server cannot take its address (port in use, no permission, unknown host)."""


def bind_server_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (0: a free port), not yet listening.

    One address per server: IPv6 if `host` has a colon, else IPv4 (``localhost`` is then
    127.0.0.1). Raises ServerStartError naming the host, the port and what to do.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServerStartError(f"cannot resolve --host {host!r}: {error.strerror}") from error
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As asyncio's create_server: a restarted server rebinds at once past TIME_WAIT (a port
    # another socket listens on is still refused on Linux and macOS).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
    except OSError as error:
        sock.close()
        raise ServerStartError(_why(host, port, error)) from error
    return sock


def _why(host: str, port: int, error: OSError) -> str:
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another server, or an earlier one still "
            "running?): stop it or choose another --port (0 picks a free one)"
        )
    if error.errno == errno.EACCES:
        return f"no permission to bind {where} (ports below 1024 need privileges): use --port"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine (0.0.0.0 serves all of them)"
    return f"cannot bind {where}: {error.strerror or error}"

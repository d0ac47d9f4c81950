"""The policy server's wire format, shared by server and client (no JAX, no TensorFlow).

Every message is one binary websocket frame holding a msgpack map; numpy arrays use
msgpack-numpy's encoding. Object and structured arrays are refused on decode: msgpack-numpy
would unpickle them, i.e. run code from the network.
"""

from __future__ import annotations

from typing import Any

import msgpack
import msgpack_numpy

HEALTH_PATH = "/healthz"
TOKEN_HEADER = "Authorization"  # "Bearer <token>" when the server has a shared secret


def _decode(obj: dict) -> Any:
    if obj.get(b"nd") is True and obj.get(b"kind") in (b"O", b"V"):
        raise ValueError("object and structured arrays are not accepted (they would be unpickled)")
    return msgpack_numpy.decode(obj)


def packb(obj: Any) -> bytes:
    """msgpack bytes of a tree of dicts, lists, scalars, strings and numpy arrays."""
    return msgpack.packb(obj, default=msgpack_numpy.encode, use_bin_type=True)


def unpackb(data: bytes, *, max_map_len: int = -1) -> Any:
    """Inverse of `packb`; arrays come back as read-only numpy arrays. `max_map_len` (-1: the
    message's size) refuses a map of more keys before it is built (a server's guard against
    requests of millions of keys, which would hold the interpreter while they are decoded)."""
    return msgpack.unpackb(
        data, object_hook=_decode, raw=False, strict_map_key=False, max_map_len=max_map_len
    )

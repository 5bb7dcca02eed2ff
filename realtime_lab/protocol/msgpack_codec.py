"""The MessagePack codec: the same messages as JSON, one map per binary frame.

Chosen per connection with the WebSocket subprotocol ``realtime-lab.v1.msgpack``
(docs/protocol.md, "Binary protocol"). A message is a MessagePack map with string
keys, exactly the JSON object of the text protocol, except that ``bytes`` values
travel as MessagePack ``bin`` (no base64). Values are restricted to what JSON can
carry plus ``bin``: no ext types (timestamps included), string map keys only, no
NaN or infinities, so every message a binary client sends can be re-encoded for a
JSON subscriber of the same channel.

``msgpack`` is an optional dependency (``pip install 'realtime_lab[binary]'``).
"""

from __future__ import annotations

from typing import Any

from realtime_lab.errors import BadMessagePack, BadValue, require
from realtime_lab.protocol.values import MAX_DEPTH, check_message

__all__ = ["MAX_DEPTH", "available", "decode", "encode"]

_lib: Any = None


def _msgpack() -> Any:
    global _lib
    if _lib is None:
        _lib = require("msgpack", "binary")
    return _lib


def available() -> bool:
    """Whether the msgpack package can be imported (the binary protocol is offered)."""
    try:
        _msgpack()
    except ImportError:
        return False
    return True


def encode(message: dict[str, Any]) -> bytes:
    """Serialize a message to MessagePack (``bytes`` values as ``bin``)."""
    return _msgpack().packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"MessagePack ext type {code} is not part of the protocol")


def decode(data: bytes) -> Any:
    """Parse one MessagePack value; raise :class:`BadMessagePack` saying why on failure."""
    lib = _msgpack()
    try:
        value = lib.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext,
                            timestamp=0, use_list=True)
    except (ValueError, TypeError, lib.ExtraData, lib.FormatError, lib.StackError,
            RecursionError) as exc:
        raise BadMessagePack(f"invalid MessagePack: {type(exc).__name__}: {exc}") from None
    try:
        check_message(value, unicode_checked=True)  # strict UTF-8 above: no surrogates
    except BadValue as err:
        raise BadMessagePack(f"invalid MessagePack: {err.message}",
                             request_id=err.request_id) from None
    return value

"""The JSON codec: one JSON object per WebSocket text frame.

Binary values (``bytes``) have no JSON type: the JSON protocol carries them as
the object ``{"$bytes": "<base64>"}`` (standard alphabet, with padding). The
encoder writes that form for ``bytes``/``bytearray``/``memoryview`` values, and the
decoder turns any object that is exactly ``{"$bytes": <valid base64 string>}``
back into ``bytes``, so a payload published on one protocol reaches subscribers of
the other unchanged (the msgpack protocol carries ``bytes`` raw).

:func:`decode` also enforces the data model (realtime_lab.protocol.values): a
text that parses but holds a value some wire format cannot carry (``1e400``,
``18446744073709551616``, ``"\\ud800"``, nesting deeper than 64) raises
:class:`~realtime_lab.errors.BadValue`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from realtime_lab.errors import BadJSON
from realtime_lab.protocol.values import check_message, json_text_suspect

BYTES_KEY = "$bytes"


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {BYTES_KEY: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                            default=_default)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); accepting them would let a client
    # publish data the encoder (allow_nan=False) then refuses to broadcast.
    raise ValueError(f"{name} is not valid JSON")


def _object(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and BYTES_KEY in obj:
        text = obj[BYTES_KEY]
        if isinstance(text, str):
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return obj  # not base64: an ordinary object
    return obj


_decoder = json.JSONDecoder(parse_constant=_reject_constant, object_hook=_object)


def encode(message: dict[str, Any]) -> str:
    """Serialize a server message to compact JSON text (bytes as ``{"$bytes": b64}``)."""
    return _encoder.encode(message)


def decode(text: str | bytes) -> Any:
    """Parse JSON text; raise :class:`BadJSON` with the parser's reason on failure, and
    :class:`~realtime_lab.errors.BadValue` for a value outside the data model."""
    try:
        value = _decoder.decode(text if isinstance(text, str) else text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BadJSON(f"invalid JSON: {exc}") from None
    if json_text_suspect(text):  # a few byte scans; the walk only when they find something
        check_message(value)
    return value

"""The JSON codec: one JSON object per WebSocket text frame."""

from __future__ import annotations

import json
from typing import Any

from realtime_lab.errors import BadJSON

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); accepting them would let a client
    # publish data the encoder (allow_nan=False) then refuses to broadcast.
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def encode(message: dict[str, Any]) -> str:
    """Serialize a server message to compact JSON text."""
    return _encoder.encode(message)


def decode(text: str) -> Any:
    """Parse JSON text; raise :class:`BadJSON` with the parser's reason on failure."""
    try:
        return _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise BadJSON(f"invalid JSON: {exc}") from None

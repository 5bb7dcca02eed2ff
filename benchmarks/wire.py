"""What the load generator writes and recognizes on the wire, per server dialect.

Two dialects over RFC 6455 WebSocket text frames:

- ``native``: realtime_lab's JSON subset (``welcome`` on connect, ``subscribe`` ->
  ``subscribed``, ``publish`` -> ``message``), spoken by the realtime_lab, plain
  Tornado, ``websockets`` and Node ``ws`` servers under test.
- ``socketio``: Engine.IO v4 / Socket.IO v5 framing for python-socketio. The
  upgrade goes to ``/socket.io/?EIO=4&transport=websocket``; the server opens
  with ``0{...}``, the client connects to the default namespace with ``40`` and
  the server's ``40{"sid":...}`` plays the part of ``welcome``; events are
  ``42["event",payload]``; the server's ping ``2`` is answered with pong ``3``.

Deliveries are counted by a byte prefix (``message_prefix``) without decoding.
The publisher puts ``@t=`` and ``time.monotonic_ns()`` (19 digits) at the start
of each message's data; a client that samples latency finds it with one
``bytes.find`` per frame (:data:`STAMP`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
CHANNEL = "bench"
STAMP = b"@t="
STAMP_DIGITS = 19


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked with a fresh random key (RFC 6455 5.3)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    repeated = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + key + body


def stamped_data(sent_ns: int, size: int) -> str:
    """Message data of ``size`` characters starting with the send time (monotonic ns)."""
    return f"{STAMP.decode()}{sent_ns:0{STAMP_DIGITS}d}".ljust(size, "x")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Dialect:
    """How one family of servers is spoken to."""

    name: str
    path: str
    message_prefix: bytes

    def subscribe(self, request_id: int) -> bytes:
        """The masked frame that subscribes to :data:`CHANNEL`."""
        if self.name == "socketio":
            return masked_frame(OP_TEXT, b"42" + _json(["subscribe", CHANNEL]))
        return masked_frame(OP_TEXT, _json({"type": "subscribe", "channel": CHANNEL,
                                            "id": request_id}))

    def publish(self, data: str) -> bytes:
        """The masked frame that publishes ``data`` to :data:`CHANNEL`."""
        if self.name == "socketio":
            return masked_frame(OP_TEXT, b"42" + _json(["publish", {"channel": CHANNEL,
                                                                   "data": data}]))
        return masked_frame(OP_TEXT, _json({"type": "publish", "channel": CHANNEL,
                                            "data": data}))

    def classify(self, payload: bytes) -> tuple[str, bytes | None]:
        """Map a control text frame to ``(event, reply)``.

        Events: ``welcome``, ``subscribed``, ``closed`` or ``other``; ``reply`` is a
        frame to send back (Engine.IO connect and pong), or None.
        """
        if self.name == "socketio":
            if payload.startswith(b"0"):
                return "other", masked_frame(OP_TEXT, b"40")  # Engine.IO open: connect
            if payload.startswith(b"40"):
                return "welcome", None
            if payload == b"2":
                return "other", masked_frame(OP_TEXT, b"3")
            if payload.startswith(b'42["subscribed"'):
                return "subscribed", None
            if payload.startswith((b"1", b"41", b"44")):
                return "closed", None
            return "other", None
        kind = json.loads(payload).get("type")
        if kind in ("welcome", "subscribed"):
            return str(kind), None
        return "other", None


DIALECTS: dict[str, Dialect] = {
    "native": Dialect("native", "/ws", b'{"type":"message"'),
    "socketio": Dialect("socketio", "/socket.io/?EIO=4&transport=websocket", b'42["message"'),
}

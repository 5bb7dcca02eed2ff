"""The WebSocket opening handshake, sans-I/O: check a request, agree, answer.

Two ways into a WebSocket, one agreement:

* HTTP/1.1 (RFC 6455 4.2): ``GET`` with ``Upgrade: websocket``,
  ``Connection: Upgrade``, ``Sec-WebSocket-Version: 13`` and a
  ``Sec-WebSocket-Key``; answered ``101 Switching Protocols`` with
  ``Sec-WebSocket-Accept``. :func:`check_upgrade`, :func:`accept_key`,
  :func:`response_101`.
* HTTP/2 extended CONNECT (RFC 8441): ``:method CONNECT``, ``:protocol
  websocket``, ``sec-websocket-version: 13``, no key and no accept; answered
  ``:status 200``. :func:`check_connect`, :func:`response_headers`.

Both then :func:`agree` on the subprotocol and permessage-deflate, and the
:class:`~realtime_lab.protocol.connection.ServerConnection` made from the
:class:`Agreement` starts OPEN. Headers are read from any mapping with a
``get`` that is case-insensitive (Tornado's ``HTTPHeaders``) or has lower-case
names (HTTP/2); a header sent several times is one comma-separated value.
A refused request raises :class:`HandshakeError` with the HTTP status to answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from realtime_lab.protocol import msgpack_codec
from realtime_lab.protocol.connection import ServerConnection
from realtime_lab.protocol.deflate import (
    EXTENSION,
    CompressionPolicy,
    DeflateParams,
    deflater_for,
    negotiate,
)
from realtime_lab.protocol.wire import (
    JSON,
    JSON_WIRE,
    MSGPACK,
    SUBPROTOCOLS,
    WireFormat,
    wire_format,
)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"

Headers = Mapping[str, str]


class HandshakeError(Exception):
    """A handshake request the server refuses; ``status`` is the HTTP answer.

    ``headers`` are added to the answer (426 carries ``Sec-WebSocket-Version: 13``).
    """

    def __init__(self, status: int, reason: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def header(headers: Headers, name: str) -> str | None:
    """The value of ``name`` (looked up as given, then in lower case)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


def check_upgrade(method: str, headers: Headers) -> str:
    """Check an HTTP/1.1 upgrade request (RFC 6455 4.2.1); return its ``Sec-WebSocket-Key``."""
    if method != "GET":
        raise HandshakeError(405, "a WebSocket upgrade must be a GET request",
                             (("Allow", "GET"),))
    if "websocket" not in _tokens(header(headers, "Upgrade")):
        raise HandshakeError(400, 'Can "Upgrade" only to "WebSocket".')
    if "upgrade" not in _tokens(header(headers, "Connection")):
        raise HandshakeError(400, '"Connection" must be "Upgrade".')
    _check_version(headers)
    key = (header(headers, "Sec-WebSocket-Key") or "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Missing or invalid Sec-WebSocket-Key")
    return key


def check_connect(method: str, protocol: str | None, headers: Headers) -> None:
    """Check an HTTP/2 extended CONNECT (RFC 8441 4): ``:method``, ``:protocol``, version."""
    if method != "CONNECT" or (protocol or "").lower() != "websocket":
        raise HandshakeError(400, "a WebSocket over HTTP/2 is a CONNECT with :protocol websocket")
    _check_version(headers)


def _check_version(headers: Headers) -> None:
    if (header(headers, "Sec-WebSocket-Version") or "").strip() != VERSION:
        raise HandshakeError(426, "Sec-WebSocket-Version must be 13",
                             (("Sec-WebSocket-Version", VERSION),))


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` answer to a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def offered_subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a client offered, in its order."""
    value = header(headers, "Sec-WebSocket-Protocol") or ""
    return [p.strip() for p in value.split(",") if p.strip()]


def choose_subprotocol(offered: list[str], *, binary: bool | None = None) -> str | None:
    """The first offered subprotocol realtime_lab speaks (msgpack only if installed)."""
    if binary is None:
        binary = msgpack_codec.available()
    for name in offered:
        kind = SUBPROTOCOLS.get(name)
        if kind == JSON or (kind == MSGPACK and binary):
            return name
    return None


@dataclass(frozen=True, slots=True)
class Agreement:
    """What the server and one client agreed at the handshake."""

    subprotocol: str | None = None
    deflate: DeflateParams | None = None
    policy: CompressionPolicy | None = None
    #: A codec the endpoint fixes (a protocol adapter's, e.g. ``pusher`` at
    #: ``/app/{key}``) instead of the subprotocol's; such a connection is not compressed.
    codec: str | None = None

    @property
    def wire(self) -> WireFormat:
        """The connection's wire format: codec from the subprotocol, outbound compressor."""
        if self.codec is not None:
            return wire_format(self.codec)
        kind = SUBPROTOCOLS.get(self.subprotocol or "", JSON)
        if self.deflate is None or self.policy is None:
            return JSON_WIRE if kind == JSON else wire_format(kind)
        return wire_format(kind, deflater_for(self.deflate, self.policy))

    def headers(self) -> list[tuple[str, str]]:
        """The ``Sec-WebSocket-Protocol`` / ``-Extensions`` answer headers agreed."""
        out: list[tuple[str, str]] = []
        if self.subprotocol is not None:
            out.append(("Sec-WebSocket-Protocol", self.subprotocol))
        if self.deflate is not None:
            out.append(("Sec-WebSocket-Extensions", self.deflate.header()))
        return out

    def connection(self, max_message_bytes: int,
                   max_message_frames: int | None = None) -> ServerConnection:
        """The connection that starts once the answer is sent (OPEN)."""
        return ServerConnection(max_message_bytes=max_message_bytes,
                                max_message_frames=max_message_frames, deflate=self.deflate,
                                deflater=self.wire.deflate)


def agree(headers: Headers, policy: CompressionPolicy,
          choose: Callable[[list[str]], str | None] = choose_subprotocol) -> Agreement:
    """The subprotocol (``choose`` picks among the offers) and permessage-deflate agreed."""
    params = negotiate(header(headers, "Sec-WebSocket-Extensions"), policy)
    return Agreement(choose(offered_subprotocols(headers)), params,
                     policy if params is not None else None)


def response_headers(agreement: Agreement, key: str | None = None) -> list[tuple[str, str]]:
    """The answer's WebSocket headers: with a ``key`` (HTTP/1.1) also Upgrade and Accept."""
    out: list[tuple[str, str]] = []
    if key is not None:
        out += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(key))]
    return out + agreement.headers()


def response_101(key: str, agreement: Agreement,
                 extra: list[tuple[str, str]] | None = None) -> bytes:
    """The whole HTTP/1.1 ``101 Switching Protocols`` answer, as bytes."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    headers = response_headers(agreement, key) + (extra or [])
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


__all__ = [
    "EXTENSION",
    "GUID",
    "Agreement",
    "HandshakeError",
    "accept_key",
    "agree",
    "check_connect",
    "check_upgrade",
    "choose_subprotocol",
    "header",
    "offered_subprotocols",
    "response_101",
    "response_headers",
]

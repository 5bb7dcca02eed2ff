"""A stricter RFC 6455 frame reader for Tornado, with our permessage-deflate and subprotocols.

Tornado's ``WebSocketProtocol13`` echoes invalid close codes, drops the TCP
connection without a close frame on invalid UTF-8 (and only notices it once a
fragmented message is complete), lets an exception escape on corrupt compressed
data, and negotiates permessage-deflate by echoing whatever the client offered.
:class:`LabWebSocketProtocol` keeps Tornado's handshake, writer, ping and close
machinery and replaces the reader (:class:`~realtime_lab.transports.frame_reader.FrameReaderMixin`,
frame_reader.py) and the negotiation:

* every protocol violation fails the connection with a close frame and its code:
  1002 (reserved bits or opcodes, unmasked or malformed frames, bad close
  frames, invalid close codes, corrupt DEFLATE data), 1007 (invalid UTF-8, found
  as soon as the bytes cannot start valid UTF-8, fragment by fragment), 1009
  (message too big, measured after decompression, never inflated past the limit);
* the permessage-deflate answer comes from :func:`realtime_lab.protocol.deflate.negotiate`
  under the server's :class:`CompressionPolicy` (always ``server_no_context_takeover``,
  so outbound frames can be compressed once per broadcast by the hub).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tornado.websocket import (
    WebSocketHandler,
    WebSocketProtocol,
    WebSocketProtocol13,
    _WebSocketParams,
)

from realtime_lab.protocol.deflate import (
    CompressionPolicy,
    DeflateParams,
    Inflater,
    as_policy,
    deflater_for,
    negotiate,
)
from realtime_lab.protocol.frames import OP_BINARY, OP_TEXT, frame_header
from realtime_lab.protocol.handshake import choose_subprotocol
from realtime_lab.protocol.wire import (
    JSON,
    JSON_WIRE,
    SUBPROTOCOL_OF,
    SUBPROTOCOLS,
    WireFormat,
    wire_format,
)
from realtime_lab.transports.frame_reader import FrameReaderMixin, valid_close_code
from realtime_lab.transports.slim import prime_instance_keys

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders


class LabWebSocketProtocol(FrameReaderMixin, WebSocketProtocol13):
    """Tornado's protocol with a strict reader and policy-driven permessage-deflate.

    Small per connection: an idle connection keeps no coroutine or Task, only the
    pending read Future of the next frame header (see :meth:`_read_next`), and
    the instance stays under CPython's 29-attribute limit for shared-key
    instance dicts (330 bytes instead of 1.6 KB).
    """

    # Set on the instance only by the server handshake (the reader's state and
    # Tornado's replaced reader state are class defaults of FrameReaderMixin).
    deflate_params: DeflateParams | None = None

    def __init__(self, handler: Any, params: _WebSocketParams,
                 policy: CompressionPolicy) -> None:
        # Not WebSocketProtocol13.__init__: it also sets the nine attributes of the
        # reader replaced here, which would take the instance over 29 attributes.
        # What it sets for the writer, pings and closing (Tornado 6.x):
        WebSocketProtocol.__init__(self, handler)
        self.mask_outgoing = False
        self.params = params
        self._waiting: object = None
        self._compression_options = params.compression_options
        self._compressor = None
        self._message_bytes_in = 0
        self._message_bytes_out = 0
        self._wire_bytes_in = 0
        self._wire_bytes_out = 0
        self._received_pong = False
        self._pong_future = None
        self._pending_pong = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ping_coroutine = None
        self.policy = policy

    # ------------------------------------------------------------------ handshake

    def _parse_extensions_header(self, headers: HTTPHeaders) -> list[tuple[str, dict[str, str]]]:
        # Called by the server handshake only: Tornado answers what we return here.
        params = negotiate(headers.get("Sec-WebSocket-Extensions"), self.policy)
        self.deflate_params = params
        if params is None:
            return []
        return [("permessage-deflate", params.as_dict())]  # type: ignore[list-item]

    def _create_compressors(self, side: str, agreed_parameters: dict[str, Any],
                            compression_options: dict[str, Any] | None = None) -> None:
        params = self.deflate_params
        assert params is not None
        self._inflater = Inflater(self.params.max_message_size,
                                  persistent=not params.client_no_context_takeover)
        # No Tornado compressor: outbound frames are built (and compressed) by the hub.

    def wire(self, subprotocol: str | None) -> WireFormat:
        """The wire format this connection agreed (codec and outbound compressor)."""
        kind = SUBPROTOCOLS.get(subprotocol or "", JSON)
        params = self.deflate_params
        if params is None:
            return JSON_WIRE if kind == JSON else wire_format(kind)
        return wire_format(kind, deflater_for(params, self.policy))


# Every attribute a connection's protocol may get, in the class's shared keys
# from the start (see slim.prime_instance_keys): 27, under the 29 that stay compact.
PROTOCOL_ATTRIBUTES = (
    "handler", "stream", "client_terminated", "server_terminated", "mask_outgoing", "params",
    "_waiting", "_compression_options", "_compressor", "_message_bytes_in",
    "_message_bytes_out", "_wire_bytes_in", "_wire_bytes_out", "_received_pong",
    "_pong_future", "_pending_pong", "close_code", "close_reason", "_ping_coroutine", "policy",
    "_selected_subprotocol", "_msg", "_failed", "deflate_params", "_inflater")
prime_instance_keys(LabWebSocketProtocol, PROTOCOL_ATTRIBUTES)


def compression_policy(hub: Any) -> CompressionPolicy:
    """The server's permessage-deflate policy.

    A ``realtime_lab.middleware.Compression`` in the hub's middleware wins over
    ``ServerOptions.compression``.
    """
    for mw in getattr(hub, "middleware", ()):
        policy = getattr(mw, "policy", None)
        if isinstance(policy, CompressionPolicy):
            return policy
    return as_policy(hub.options.compression)


def lab_protocol(handler: WebSocketHandler,
                 policy: CompressionPolicy) -> LabWebSocketProtocol | None:
    """What ``WebSocketHandler.get_websocket_protocol`` should return for our handlers."""
    if handler.request.headers.get("Sec-WebSocket-Version") != "13":
        return None
    key = (handler.ping_interval, handler.ping_timeout, handler.max_message_size,
           policy.enabled)
    params = _PARAMS.get(key)
    if params is None:  # one per configuration, shared by its connections (read only)
        if len(_PARAMS) >= 64:
            _PARAMS.clear()
        params = _PARAMS[key] = _WebSocketParams(
            ping_interval=key[0], ping_timeout=key[1], max_message_size=key[2],
            compression_options={} if policy.enabled else None)
    return LabWebSocketProtocol(handler, params, policy)


_PARAMS: dict[tuple[Any, ...], _WebSocketParams] = {}


def handler_wire(handler: WebSocketHandler) -> WireFormat:
    """The wire format of an open handler's connection (JSON when unknown)."""
    conn = handler.ws_connection
    if isinstance(conn, LabWebSocketProtocol):
        return conn.wire(handler.selected_subprotocol)
    return JSON_WIRE


class EchoHandler(WebSocketHandler):
    """``/echo`` for conformance runs (``ServerOptions.conformance_echo``): echo every message.

    Uses the same reader, negotiation and frame building as ``/ws``; echoed
    messages are compressed by the connection's deflater (threshold applies).
    """

    policy: CompressionPolicy

    def initialize(self, policy: CompressionPolicy, max_message_size: int = 64 << 20) -> None:
        self.policy = policy
        self._max = max_message_size
        self._wire: WireFormat = JSON_WIRE

    @property
    def max_message_size(self) -> int:
        return self._max

    def get_compression_options(self) -> dict[str, Any] | None:
        return {} if self.policy.enabled else None

    def get_websocket_protocol(self) -> LabWebSocketProtocol | None:  # type: ignore[override]
        return lab_protocol(self, self.policy)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._wire = handler_wire(self)

    def on_message(self, message: str | bytes) -> None:
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        if isinstance(message, str):
            opcode, payload = OP_TEXT, message.encode("utf-8")
        else:
            opcode, payload = OP_BINARY, message
        deflate = self._wire.deflate
        rsv1 = deflate is not None and len(payload) >= deflate.threshold
        if rsv1:
            assert deflate is not None
            payload = deflate.compress(payload)
        conn.stream.write(  # type: ignore[attr-defined, union-attr]
            frame_header(opcode, len(payload), rsv1=rsv1) + payload)


__all__ = [
    "EchoHandler",
    "LabWebSocketProtocol",
    "SUBPROTOCOL_OF",
    "choose_subprotocol",
    "compression_policy",
    "handler_wire",
    "lab_protocol",
    "valid_close_code",
]

"""The Tornado WebSocket transport (HTTP/1.1): a handler that reports to the hub.

The handler parses frames (Tornado does that); outbound frames are built by the
hub once per broadcast and written by the connection's :class:`TornadoPort`
(tornado_port.py) straight to its socket, so Tornado's per-message framing is
skipped on the hot path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tornado.iostream import IOStream
from tornado.websocket import WebSocketHandler

from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.hub import PendingOpen
from realtime_lab.core.security import origin_allowed
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.codec import encode
from realtime_lab.protocol.messages import error_message
from realtime_lab.transports.slim import prime_instance_keys
from realtime_lab.transports.tornado_port import TornadoPort
from realtime_lab.transports.ws_protocol import (
    LabWebSocketProtocol,
    choose_subprotocol,
    compression_policy,
    handler_wire,
    lab_protocol,
)

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.session import Session

log = logging.getLogger("realtime_lab.transports")

MAX_USER_ID_LENGTH = 128


class HubWebSocketHandler(WebSocketHandler):
    """``/ws``: one instance per connection, forwarding everything to the hub."""

    hub: Hub
    session: Session | None

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.session = None

    def _detach_stream(self) -> IOStream:
        # Tornado's version also replaces seven HTTP methods (write, finish, ...) by
        # instance attributes that raise: that takes the handler over CPython's
        # 29-attribute limit for compact instance dicts (+500 bytes per connection).
        # The hub never calls them; the stream is detached as Tornado does it.
        return self.detach()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """``realtime-lab.v1.msgpack`` or ``realtime-lab.v1.json``; none means JSON."""
        return choose_subprotocol(subprotocols)

    def get_compression_options(self) -> dict[str, Any] | None:
        return {} if compression_policy(self.hub).enabled else None

    def get_websocket_protocol(self) -> LabWebSocketProtocol | None:  # type: ignore[override]
        """A strict frame reader with policy-driven permessage-deflate (ws_protocol.py)."""
        return lab_protocol(self, compression_policy(self.hub))

    def check_origin(self, origin: str) -> bool:
        """Refuse (HTTP 403) browsers from origins not in ``allowed_origins``."""
        allowed = origin_allowed(origin, self.hub.options.allowed_origins, self.request.host)
        if not allowed:
            self.hub.refused_handshake(self.request.remote_ip or "", 403, "forbidden_origin",
                                       "allowed_origins")
        return allowed

    def open(self, *args: Any, **kwargs: Any) -> Any:
        user = self.get_query_argument("user", None)
        if user is not None and not (0 < len(user) <= MAX_USER_ID_LENGTH):
            reason = f"user id must be 1 to {MAX_USER_ID_LENGTH} characters"
            # Like every refused connection: an error message that says why, then the code.
            self.write_message(encode(error_message("bad_user", reason)))
            self.close(CloseCode.BAD_REQUEST, reason)
            return None
        assert self.ws_connection is not None
        stream = self.ws_connection.stream  # type: ignore[attr-defined]
        assert stream is not None
        self.set_nodelay(True)
        remote = self.request.remote_ip or ""
        port = TornadoPort(self, stream, remote, self.hub.options.close_flush_timeout)
        port.wire = handler_wire(self)
        result = self.hub.open(port, user=user, request=self._connect_request(remote, user))
        if isinstance(result, PendingOpen):
            self.session = result.session  # known at once, so on_close can report it
            return self._open_later(result)
        self.session = result
        return None

    async def _open_later(self, pending: Any) -> None:
        await pending

    def _connect_request(self, remote: str, user: str | None) -> ConnectRequest:
        req = self.request
        token = self.get_query_argument("token", None)
        auth = req.headers.get("Authorization", "")
        if token is None and auth.startswith("Bearer "):
            token = auth[7:].strip()
        query = {k: v[-1].decode("utf-8", "replace") for k, v in req.query_arguments.items()
                 if k != "token"}
        return ConnectRequest(remote=remote, user=user, origin=req.headers.get("Origin"),
                              path=req.path, query=query, headers=dict(req.headers),
                              token=token)

    def on_message(self, message: str | bytes) -> Any:
        session = self.session
        if session is None:
            return None
        if isinstance(message, str):
            return self.hub.receive_text(session, message)
        return self.hub.receive_binary(session, message)

    def on_pong(self, data: bytes) -> None:
        if self.session is not None:
            self.hub.pong(self.session)

    def on_close(self) -> None:
        session, self.session = self.session, None  # break handler -> session -> port -> handler
        if session is not None:
            self.hub.closed(session, self.close_code, self.close_reason or "")


# The attributes Tornado (6.x) and this class give a handler, in the class's shared
# instance keys from the start (see transports/slim.py prime_instance_keys).
HANDLER_ATTRIBUTES = (
    "application", "request", "_headers_written", "_finished", "_auto_finish",
    "_prepared_future", "ui", "_headers", "_write_buffer", "_status_code", "_reason", "hub",
    "session", "ws_connection", "close_code", "close_reason", "_on_close_called", "_transforms",
    "path_args", "path_kwargs", "open_args", "open_kwargs")
prime_instance_keys(HubWebSocketHandler, HANDLER_ATTRIBUTES)

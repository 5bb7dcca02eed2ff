"""The Tornado side of a WebSocket (HTTP/1.1): check the upgrade, answer 101, hand over.

:class:`HubWebSocketHandler` (``/ws``) and :class:`EchoHandler` (``/echo``, for
conformance runs) are plain ``RequestHandler``s. They check the upgrade request
with the sans-I/O helpers of :mod:`realtime_lab.protocol.handshake` and refuse it
with its HTTP status, or take the connection over: ``detach()`` the stream from
Tornado's HTTP server and give it to a pump (:mod:`realtime_lab.transports.pump`)
that writes the 101 answer and drives a
:class:`~realtime_lab.protocol.connection.ServerConnection` from then on. Only
Tornado's public API is used, so any Tornado release in the declared range works.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Protocol, cast

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.web import RequestHandler

from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.hub import PendingOpen
from realtime_lab.core.security import handshake_origin_allowed
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.codec import encode
from realtime_lab.protocol.connection import ServerConnection
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.handshake import (
    Agreement,
    HandshakeError,
    agree,
    check_connect,
    check_upgrade,
    response_101,
)
from realtime_lab.protocol.messages import error_message
from realtime_lab.protocol.wire import WireFormat
from realtime_lab.transports.pump import Pump, SocketPump, StreamPump

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub

log = logging.getLogger("realtime_lab.transports")
_throttle = LogThrottle(log)

MAX_USER_ID_LENGTH = 128
#: Bytes a client may send before it has seen the 101 answer (read from Tornado's
#: buffer at the hand-over; anything later is read from the socket as usual).
MAX_EARLY_BYTES = 1 << 20


def compression_policy(hub: Hub) -> CompressionPolicy:
    """The server's permessage-deflate policy: ``hub.compression`` (a
    ``realtime_lab.middleware.Compression`` in the hub's middleware wins over
    ``ServerOptions.compression``)."""
    return hub.compression


class Tunnel(Protocol):
    """What ``detach()`` returns for an HTTP/2 extended CONNECT (RFC 8441): the stream,
    which answers ``:status 200`` and becomes the WebSocket's pump
    (``realtime_lab.transports.http2.H2Request``)."""

    def accept_websocket(self, headers: list[tuple[str, str]], conn: ServerConnection,
                         remote: str, *, close_timeout: float, flush_timeout: float,
                         wire: WireFormat = ...) -> Pump: ...


class WebSocketUpgrade(RequestHandler):
    """A ``GET`` that becomes a WebSocket: check, agree, answer 101, hand over to a pump.

    On HTTP/2 (``ServerOptions.http2``) the same handler takes the extended
    ``CONNECT`` of RFC 8441: checked with :func:`check_connect`, answered 200 on
    its stream, which becomes the pump.
    """

    SUPPORTED_METHODS = (*RequestHandler.SUPPORTED_METHODS, "CONNECT")
    policy: CompressionPolicy = CompressionPolicy()
    max_message_bytes = 64 << 20
    #: frames one message may arrive in (None: the connection's default for its size)
    max_message_frames: int | None = None
    close_timeout = 5.0  # for the client's answer to our close frame
    flush_timeout = 10.0  # for the client to read up to our close frame

    def refuse(self, error: HandshakeError) -> None:
        """Answer an upgrade that cannot be accepted with its HTTP status."""
        self.set_status(error.status)
        for name, value in error.headers:
            self.set_header(name, value)
        self.finish(error.reason)

    def upgrade(self) -> Pump | None:
        """The pump of the accepted connection, or None when the request was refused."""
        request = self.request
        key: str | None = None
        try:
            if request.method == "CONNECT":  # HTTP/2 (an HTTP/1.1 CONNECT has no :protocol)
                check_connect(request.method, getattr(request.connection, "connect_protocol",
                                                      None), request.headers)
            else:
                key = check_upgrade(request.method or "", request.headers)
        except HandshakeError as error:
            self.refuse(error)
            return None
        if not self.accept_origin():
            return None
        return self.take_over(key, self.agreement())

    def agreement(self) -> Agreement:
        """What this endpoint agrees with the client: by default the subprotocol and
        permessage-deflate it offered (a protocol adapter's endpoint fixes its codec)."""
        return agree(self.request.headers, self.policy)

    def accept_origin(self) -> bool:
        """Override to refuse an upgrade (the override answers it, e.g. 403)."""
        return True

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """An HTTP/2 extended CONNECT: the same as the HTTP/1.1 ``GET``."""
        return self.get(*args, **kwargs)

    def take_over(self, key: str | None, agreement: Agreement) -> Pump:
        """Answer 101 and move the connection out of Tornado's HTTP server into a pump
        (``key`` None: answer 200 on the HTTP/2 stream, which becomes the pump)."""
        conn = agreement.connection(self.max_message_bytes, self.max_message_frames)
        remote = self.request.remote_ip or ""
        if key is None:
            self.set_status(200)
            self.application.log_request(self)
            tunnel = cast(Tunnel, self.detach())
            return tunnel.accept_websocket(agreement.headers(), conn, remote,
                                           close_timeout=self.close_timeout,
                                           flush_timeout=self.flush_timeout, wire=agreement.wire)
        answer = response_101(key, agreement)
        self.set_status(101)
        self.application.log_request(self)  # the access log line finish() would write
        stream = self.detach()
        loop = asyncio.get_running_loop()
        early = None if isinstance(stream, SSLIOStream) or not _has_readers(loop) \
            else _buffered_bytes(stream)
        if early is None:  # TLS (or no add_reader): stay on the IOStream
            return StreamPump(stream, conn, remote, close_timeout=self.close_timeout,
                              flush_timeout=self.flush_timeout, wire=agreement.wire,
                              answer=answer)
        sock = _dup_socket(stream)
        stream.close()  # Tornado forgets its descriptor; the connection lives on in ours
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return SocketPump(sock, conn, remote, close_timeout=self.close_timeout,
                          flush_timeout=self.flush_timeout, wire=agreement.wire,
                          answer=answer, early=early)


def _has_readers(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop watches sockets with add_reader (not Windows' proactor loop)."""
    proactor = getattr(asyncio, "ProactorEventLoop", None)
    return proactor is None or not isinstance(loop, proactor)


def _dup_socket(stream: IOStream) -> socket.socket:
    """A socket of our own on the stream's connection (a new descriptor, ``dup``)."""
    fileobj = stream.fileno()
    if isinstance(fileobj, socket.socket):
        return fileobj.dup()
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    return socket.socket(fileno=os.dup(fd))


def _buffered_bytes(stream: IOStream) -> bytes | None:
    """What Tornado read past the upgrade request (a client that did not wait for the
    101); None when the stream is already closed."""
    early = b""
    while len(early) < MAX_EARLY_BYTES:
        try:
            future = cast("asyncio.Future[bytes]",
                          stream.read_bytes(MAX_EARLY_BYTES, partial=True))
        except StreamClosedError:
            return None
        if not future.done():  # nothing buffered, nothing on the socket yet
            break
        if future.exception() is not None:
            return None
        early += future.result()
    return early


class HubWebSocketHandler(WebSocketUpgrade):
    """``/ws``: one request per connection; the pump then reports to the hub."""

    hub: Hub

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.policy = compression_policy(hub)
        options = hub.options
        self.max_message_bytes = options.max_message_bytes
        self.max_message_frames = options.max_message_fragments
        self.close_timeout = options.close_timeout
        self.flush_timeout = options.close_flush_timeout

    def accept_origin(self) -> bool:
        """Refuse (HTTP 403) browsers from origins not in ``allowed_origins``."""
        headers = self.request.headers
        if handshake_origin_allowed(headers.get("Origin"), self.hub.options.allowed_origins,
                                    self.request.host, headers.get("Sec-Fetch-Site")):
            return True
        self.hub.refused_handshake(self.request.remote_ip or "", 403, "forbidden_origin",
                                   "allowed_origins")
        self.refuse(HandshakeError(403, "Cross origin websockets not allowed"))
        return False

    def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.get_query_argument("user", None)
        connect = self._connect_request(self.request.remote_ip or "", user)
        pump = self.upgrade()
        if pump is None:
            return
        if user is not None and not (0 < len(user) <= MAX_USER_ID_LENGTH):
            reason = f"user id must be 1 to {MAX_USER_ID_LENGTH} characters"
            # Like every refused connection: an error message that says why, then the code.
            pump.write(text_frame(encode(error_message("bad_user", reason))))
            pump.close(CloseCode.BAD_REQUEST, reason)
            pump.start(None, None)
            return
        try:
            result = self.hub.open(pump, user=user, request=connect)
        except Exception:  # a bug in the hub: this connection only, logged once in a while
            _throttle.log("open_failed", logging.ERROR, "admitting %s failed", pump.remote,
                          exc_info=True)
            pump.abort()
            return
        if isinstance(result, PendingOpen):
            pump.start(self.hub, result.session, result)
        else:
            pump.start(self.hub, result)

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


class Echo:
    """The endpoint of ``/echo``: every message straight back, compressed as agreed."""

    def receive_text(self, session: Pump, text: str) -> None:
        session.send_message(text)

    def receive_binary(self, session: Pump, data: bytes) -> None:
        session.send_message(data)

    def pong(self, session: Pump) -> None:
        pass

    def closed(self, session: Pump, code: int | None, reason: str) -> None:
        pass


ECHO = Echo()


class EchoHandler(WebSocketUpgrade):
    """``/echo`` for conformance runs (``ServerOptions.conformance_echo``): echo every message.

    The same handshake, connection and pump as ``/ws``; echoed messages are
    compressed by the connection's deflater (its threshold applies).
    """

    def initialize(self, policy: CompressionPolicy, max_message_size: int = 64 << 20) -> None:
        self.policy = policy
        self.max_message_bytes = max_message_size

    def get(self, *args: Any, **kwargs: Any) -> None:
        pump = self.upgrade()
        if pump is not None:
            pump.start(ECHO, pump)


__all__ = ["ECHO", "EchoHandler", "HubWebSocketHandler", "MAX_USER_ID_LENGTH",
           "WebSocketUpgrade", "compression_policy"]

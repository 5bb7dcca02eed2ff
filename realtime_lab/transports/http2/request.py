"""Ordinary HTTP/2 requests, served by the Tornado application through its public interfaces.

Each stream the client opens becomes an :class:`H2Request`: an
``httputil.HTTPConnection`` handed to the server's
``HTTPServerConnectionDelegate.start_request`` (the Host check, then the
application's router), so the demo page, the static files, the HTTP API and the
WebSocket endpoint answer on h2 exactly as on HTTP/1.1. ``:authority`` is
passed on as ``Host``; the answer's connection-specific headers (``Connection``,
``Transfer-Encoding``...) are dropped, as HTTP/2 forbids them.

An extended CONNECT (``:protocol websocket``, RFC 8441) reaches the WebSocket
handler as a ``CONNECT`` request; the handler checks it, then ``detach()``
returns this request and :meth:`H2Request.accept_websocket` answers
``:status 200`` and turns the stream into a
:class:`~realtime_lab.transports.http2.websocket.WebSocketStream`. Refusals:
a CONNECT without ``:protocol`` (we are no proxy) gets 405; an extended CONNECT
when ``http2_websockets`` is off (SETTINGS_ENABLE_CONNECT_PROTOCOL was 0) gets
400; a request body over ``max_body_bytes`` gets 413.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from tornado import httputil

from realtime_lab.protocol.connection import ServerConnection
from realtime_lab.protocol.wire import JSON_WIRE, WireFormat
from realtime_lab.transports.http2.websocket import WebSocketStream

if TYPE_CHECKING:
    from realtime_lab.transports.http2.session import H2Session, StreamOwner

#: Response headers HTTP/2 forbids (RFC 9113 8.2.2).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade"})


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RequestContext:
    """What Tornado's ``HTTPServerRequest`` reads from ``connection.context``."""

    def __init__(self, remote_ip: str, protocol: str, address: Any = None) -> None:
        self.remote_ip = remote_ip
        self.protocol = protocol
        self.address = address

    def __str__(self) -> str:
        return self.remote_ip


def answer(session: H2Session, stream_id: int, status: int, text: str) -> None:
    """A short plain-text answer, then END_STREAM."""
    body = (text + "\n").encode("utf-8")
    if session.send_headers(stream_id, [(":status", str(status)),
                                        ("content-type", "text/plain; charset=utf-8"),
                                        ("content-length", str(len(body)))]):
        session.owners[stream_id] = _Discard(session, stream_id)
        session.send(stream_id, body, frames=False)
        session.end_stream(stream_id)


class _Discard:
    """The owner of a stream already answered: what the client still sends is dropped."""

    def __init__(self, session: H2Session, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id

    def data_received(self, data: bytes, flow: int) -> None:
        self.session.acknowledge(self.stream_id, flow)

    def end_received(self) -> None:
        pass

    def reset_received(self) -> None:
        pass


class RequestRouter:
    """Makes the owner of each new stream: a request to ``delegate`` (the server)."""

    def __init__(self, delegate: httputil.HTTPServerConnectionDelegate, context: RequestContext,
                 *, max_body_bytes: int) -> None:
        self.delegate = delegate
        self.context = context
        self.max_body_bytes = max_body_bytes

    def __call__(self, session: H2Session, stream_id: int,
                 headers: list[tuple[str, str]]) -> StreamOwner | None:
        pseudo: dict[str, str] = {}
        fields = httputil.HTTPHeaders()
        for name, value in headers:
            if name.startswith(":"):
                pseudo[name] = value
            elif name != "cookie" or "Cookie" not in fields:
                fields.add(name, value)
            else:  # HTTP/2 may split cookies in several fields (RFC 9113 8.2.3)
                fields["Cookie"] = fields["Cookie"] + "; " + value
        if "Host" not in fields and ":authority" in pseudo:
            fields["Host"] = pseudo[":authority"]
        method = pseudo.get(":method", "")
        protocol = pseudo.get(":protocol")
        if method == "CONNECT":
            if protocol is None:
                answer(session, stream_id, 405, "CONNECT is only for WebSockets (:protocol)")
                return None
            if not session.websockets:
                answer(session, stream_id, 400, "extended CONNECT is off on this server "
                       "(SETTINGS_ENABLE_CONNECT_PROTOCOL = 0)")
                return None
        path = pseudo.get(":path", "/")
        request = H2Request(session, stream_id, self.context, protocol, self.max_body_bytes)
        request.start(self.delegate, httputil.RequestStartLine(method, path, "HTTP/2.0"), fields)
        return request


class H2Request(httputil.HTTPConnection):
    """One request on an HTTP/2 stream, as Tornado's ``HTTPConnection``."""

    def __init__(self, session: H2Session, stream_id: int, context: RequestContext,
                 connect_protocol: str | None, max_body_bytes: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.context = context
        #: ``:protocol`` of an extended CONNECT (the WebSocket handler checks it), else None
        self.connect_protocol = connect_protocol
        self.max_body_bytes = max_body_bytes
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self._head = False
        self._body = 0
        self._ended = False  # the client's END_STREAM
        self._answered = False  # finish() was called
        self._close_callback: Any = None
        self._early: deque[tuple[bytes, int]] = deque()  # DATA before a WebSocket is accepted

    def start(self, server: httputil.HTTPServerConnectionDelegate,
              start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> None:
        self._head = start_line.method == "HEAD"
        self.delegate = server.start_request(self.session, self)
        self._call(self.delegate.headers_received(start_line, headers))
        if self.connect_protocol is not None:  # no body: the handler runs now
            self.delegate.finish()

    @staticmethod
    def _call(result: Any) -> None:
        if result is not None and inspect.isawaitable(result):
            asyncio.ensure_future(result)

    # ------------------------------------------------------------ the session's calls

    def data_received(self, data: bytes, flow: int) -> None:
        if self.connect_protocol is not None or self._answered:
            if self._answered:
                self.session.acknowledge(self.stream_id, flow)
            else:  # the WebSocket's first frames, before the handler accepted it
                self._early.append((data, flow))
            return
        self._body += len(data)
        if self._body > self.max_body_bytes:
            self._answered = True
            answer(self.session, self.stream_id, 413, "request body too large")
            self._closing()
            return
        if self.delegate is not None:
            self._call(self.delegate.data_received(data))
        self.session.acknowledge(self.stream_id, flow)

    def end_received(self) -> None:
        self._ended = True
        if self.connect_protocol is None and self.delegate is not None and not self._answered:
            self.delegate.finish()

    def reset_received(self) -> None:
        self._answered = True
        self._early.clear()
        self._closing()

    def _closing(self) -> None:
        delegate, self.delegate = self.delegate, None
        if delegate is not None:
            delegate.on_connection_close()
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()

    # ------------------------------------------------------------ HTTPConnection

    def write_headers(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                      headers: httputil.HTTPHeaders, chunk: bytes | None = None,
                      ) -> asyncio.Future[None]:
        code = getattr(start_line, "code", 200)
        fields = [(":status", str(code))]
        fields += [(name.lower(), value) for name, value in headers.get_all()
                   if name.lower() not in HOP_BY_HOP]
        self.session.send_headers(self.stream_id, fields)
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if chunk and not self._head:
            self.session.send(self.stream_id, chunk, frames=False)
        self.session.when_drained(self.stream_id, functools.partial(_resolve, future))
        return future

    def finish(self) -> None:
        if self._answered:
            return
        self._answered = True
        session, sid = self.session, self.stream_id
        for _data, flow in self._early:  # a refused WebSocket: nobody reads these
            session.acknowledge(sid, flow)
        self._early.clear()
        session.owners[sid] = _Discard(session, sid)
        session.end_stream(sid)
        if not self._ended:  # the answer is complete: the rest of the request is not needed
            session.when_drained(sid, lambda: session.reset(sid, ErrorCodes.NO_ERROR))

    def set_close_callback(self, callback: Any) -> None:
        self._close_callback = callback

    def detach(self) -> H2Request:
        """What ``RequestHandler.detach()`` returns: this request (see :meth:`accept_websocket`)."""
        self._answered = True
        self.delegate = None
        return self

    def accept_websocket(self, headers: list[tuple[str, str]], conn: ServerConnection,
                         remote: str, *, close_timeout: float, flush_timeout: float,
                         wire: WireFormat = JSON_WIRE) -> WebSocketStream:
        """Answer ``:status 200`` with ``headers``; the stream is a WebSocket from now on."""
        session, sid = self.session, self.stream_id
        port = WebSocketStream(session, sid, conn, remote, close_timeout=close_timeout,
                               flush_timeout=flush_timeout, wire=wire)
        fields = [(":status", "200")] + [(name.lower(), value) for name, value in headers]
        if session.owners.get(sid) is not self or not session.send_headers(sid, fields):
            # The client left meanwhile: closed once the handler has started the port.
            asyncio.get_running_loop().call_soon(port.reset_received)
            return port
        session.owners[sid] = port
        early, self._early = self._early, deque()
        for data, flow in early:
            port.data_received(data, flow)
        if self._ended:
            port.end_received()
        return port


__all__ = ["H2Request", "RequestContext", "RequestRouter", "answer"]

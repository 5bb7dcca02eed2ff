"""HTTP/2 on the HTTP/1.1 port: which protocol a new connection speaks, and its session.

* TLS: ALPN. The server offers ``h2`` and ``http/1.1``; once the TLS handshake
  is over (``SSLIOStream.wait_for_handshake``), a connection that chose ``h2``
  gets an :class:`~.session.H2Session`, any other goes to Tornado's HTTP/1.1 server.
* Cleartext: h2c with prior knowledge (RFC 9113 3.3). The first bytes are
  peeked (``MSG_PEEK``, nothing is consumed): the 24-byte connection preface
  ``PRI * HTTP/2.0...`` means HTTP/2, anything else HTTP/1.1. (The HTTP/1.1
  ``Upgrade: h2c`` dance is not offered; browsers speak h2 only over TLS.)

Either wait is bounded by ``handshake_timeout``; a connection that says nothing
in time is closed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream

from realtime_lab.transports.http2.request import RequestContext, RequestRouter
from realtime_lab.transports.http2.session import H2Session

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALPN_PROTOCOLS = ["h2", "http/1.1"]
_RETRY = 0.01  # seconds between peeks while only part of the preface has arrived


class H2Listener:
    """Sorts new connections into HTTP/2 sessions and HTTP/1.1 (see the module docstring).

    ``delegate`` serves each request (the server: Host check, then the application).
    """

    def __init__(self, delegate: httputil.HTTPServerConnectionDelegate, *,
                 websockets: bool = True, handshake_timeout: float = 10.0,
                 max_header_bytes: int = 64 * 1024, max_body_bytes: int = 1 << 20) -> None:
        self.delegate = delegate
        self.websockets = websockets
        self.handshake_timeout = handshake_timeout
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.sessions: set[H2Session] = set()

    def dispatch(self, stream: IOStream, address: Any, http1: Callable[[], None],
                 closed: Callable[[], None]) -> None:
        """Serve ``stream`` as HTTP/2, or call ``http1()``; ``closed()`` once an HTTP/2
        session (or a connection that never said anything) is over."""

        def decided(h2: bool | None) -> None:
            if h2 is None:  # gone, or silent too long
                stream.close()
                closed()
            elif h2:
                self.serve(stream, address, closed)
            else:
                http1()

        if isinstance(stream, SSLIOStream):
            _Handshake(stream, self.handshake_timeout, decided)
        else:
            _Sniffer(stream, self.handshake_timeout, decided)

    def serve(self, stream: IOStream, address: Any, closed: Callable[[], None]) -> H2Session:
        remote = str(address[0]) if isinstance(address, tuple) and address else ""
        protocol = "https" if isinstance(stream, SSLIOStream) else "http"
        router = RequestRouter(self.delegate, RequestContext(remote, protocol, address),
                               max_body_bytes=self.max_body_bytes)

        def on_close(session: H2Session) -> None:
            self.sessions.discard(session)
            closed()

        session = H2Session(stream, remote, router, websockets=self.websockets,
                            max_header_bytes=self.max_header_bytes, on_close=on_close)
        self.sessions.add(session)
        return session.start()

    def close_all(self) -> None:
        """GOAWAY to every session (the server is stopping)."""
        for session in list(self.sessions):
            session.close()


class _Decision:
    """Waits (at most ``timeout``) for what a new connection speaks; tells ``decided`` once:
    True for HTTP/2, False for HTTP/1.1, None when it closed or said nothing in time."""

    def __init__(self, stream: IOStream, timeout: float,
                 decided: Callable[[bool | None], None]) -> None:
        self.stream = stream
        self.loop = IOLoop.current()
        self.decided = decided
        self.done = False
        self.timer = self.loop.call_later(timeout, self.give_up)

    def give_up(self) -> None:
        self.tell(None)

    def tell(self, h2: bool | None) -> None:
        if self.done:
            return
        self.done = True
        self.loop.remove_timeout(self.timer)
        self.stop()
        self.decided(h2)

    def stop(self) -> None:
        """Stop watching the connection (before anyone else uses it)."""


class _Handshake(_Decision):
    """TLS: the protocol ALPN chose once the handshake is over."""

    def __init__(self, stream: SSLIOStream, timeout: float,
                 decided: Callable[[bool | None], None]) -> None:
        super().__init__(stream, timeout, decided)
        stream.wait_for_handshake().add_done_callback(self._shaken)

    def _shaken(self, future: Any) -> None:
        sock = self.stream.socket
        if future.exception() is not None or sock is None:
            self.tell(None)
        else:
            self.tell(sock.selected_alpn_protocol() == "h2")  # type: ignore[attr-defined]


class _Sniffer(_Decision):
    """Cleartext: peek at the first bytes for the HTTP/2 connection preface."""

    def __init__(self, stream: IOStream, timeout: float,
                 decided: Callable[[bool | None], None]) -> None:
        super().__init__(stream, timeout, decided)
        self.sock = stream.socket
        self.watching = False
        self.retry: object = None
        self.watch()

    def watch(self) -> None:
        self.retry = None
        if self.sock is None or self.stream.closed():
            self.tell(None)
            return
        self.loop.add_handler(self.sock.fileno(), self._readable, IOLoop.READ)
        self.watching = True

    def stop(self) -> None:
        if self.watching and self.sock is not None:
            self.loop.remove_handler(self.sock.fileno())
        self.watching = False
        if self.retry is not None:
            self.loop.remove_timeout(self.retry)
            self.retry = None

    def _readable(self, _fd: Any, _events: int) -> None:
        assert self.sock is not None
        try:
            head = self.sock.recv(len(PREFACE), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            head = b""
        if head and PREFACE.startswith(head) and len(head) < len(PREFACE):
            self.stop()  # a part of the preface: look again in a moment
            self.retry = self.loop.call_later(_RETRY, self.watch)
            return
        self.tell(None if not head else head == PREFACE)


__all__ = ["ALPN_PROTOCOLS", "H2Listener", "PREFACE"]

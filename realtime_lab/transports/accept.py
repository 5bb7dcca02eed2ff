"""Accepting TCP connections: back off when out of descriptors, bound pending ones per IP.

Tornado's accept handler (``netutil.add_accept_handler``) lets ``accept()``'s
EMFILE escape to the event loop. The listening socket stays readable (the
connection waits in the kernel's backlog), so the loop calls it again at once:
a traceback per loop turn, a core spinning, and nothing served. :class:`AcceptLoop`
accepts on the listening sockets itself, with public Tornado APIs only
(``IOLoop.add_handler``, ``IOStream``, ``HTTPServer.handle_stream``), and on
EMFILE/ENFILE (or ENOBUFS/ENOMEM) stops watching them for ``pause`` seconds, as
nginx does (``accept_mutex_delay``, 500 ms), logging once per minute.

:class:`EdgeHTTPServer` counts the connections it serves that have not become
WebSockets yet (``pending``, per client IP): from accept until the request loop
ends, by an upgrade or a close. :class:`AcceptLoop` closes a new connection at
once when its IP already holds more than ``max_connections_per_ip`` (pending plus
open WebSockets): one over the limit is let in, so that a WebSocket client learns
why (``too_many_connections_from_ip``, close 4104).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream
from tornado.netutil import ssl_wrap_socket

from realtime_lab.logthrottle import LogThrottle

log = logging.getLogger("realtime_lab.transports")

#: accept() errors that mean "out of descriptors or memory": wait, do not spin.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: connections accepted per readiness event before other work gets a turn (Tornado: 128)
ACCEPTS_PER_EVENT = 128


def peer_ip(address: Any) -> str:
    """The IP of a peer address as ``accept()`` returns it ('' for a Unix socket)."""
    return str(address[0]) if isinstance(address, tuple) and address else ""


class EdgeHTTPServer(HTTPServer):
    """Tornado's HTTPServer, counting per client IP the connections still in HTTP.

    A connection is pending from :meth:`handle_stream` until Tornado's request
    loop for it ends (:meth:`on_close`): it closed, or it became a WebSocket.
    """

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.pending: dict[str, int] = {}
        self._pending_ip: dict[Any, str] = {}
        #: HTTP/2 on this port (``realtime_lab.transports.http2.H2Listener``), or None
        self.h2: Any = None

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        ip = peer_ip(address)
        self._pending_ip[stream] = ip
        self.pending[ip] = self.pending.get(ip, 0) + 1
        if self.h2 is None:
            super().handle_stream(stream, address)
            return
        # An HTTP/2 connection stays pending (one connection of its IP) until it closes.
        self.h2.dispatch(stream, address, lambda: super(EdgeHTTPServer, self).handle_stream(
            stream, address), lambda: self._release(stream))

    def on_close(self, server_conn: object) -> None:
        self._release(getattr(server_conn, "stream", None))
        super().on_close(server_conn)

    def _release(self, stream: object) -> None:
        ip = self._pending_ip.pop(stream, None)
        if ip is not None:
            count = self.pending[ip] - 1
            if count:
                self.pending[ip] = count
            else:
                del self.pending[ip]

    async def close_all_connections(self) -> None:
        if self.h2 is not None:
            self.h2.close_all()
        await super().close_all_connections()


class AcceptLoop:
    """Accepts connections on listening sockets and hands them to an :class:`EdgeHTTPServer`.

    ``open_per_ip(ip)`` tells how many WebSockets that IP has open;
    ``on_refused(ip)`` is told of each connection closed at accept for the per-IP limit.
    """

    def __init__(self, http: EdgeHTTPServer, *, max_per_ip: int,
                 open_per_ip: Callable[[str], int],
                 ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
                 pause: float = 0.5,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.http = http
        self.max_per_ip = max_per_ip
        self.open_per_ip = open_per_ip
        self.ssl_options = ssl_options
        self.pause = pause
        self.on_refused = on_refused
        self.sockets: list[socket.socket] = []
        self.paused = 0  # times accepting was paused (out of descriptors)
        self.refused = 0  # connections closed at accept (per-IP limit)
        self.throttle = LogThrottle(log, interval=60.0)
        self._watching = False
        self._resume_timer: object = None

    def start(self, sockets: Iterable[socket.socket]) -> AcceptLoop:
        self.sockets = list(sockets)
        for sock in self.sockets:
            sock.setblocking(False)
        self._watch()
        return self

    def stop(self) -> None:
        """Stop accepting and close the listening sockets (idempotent)."""
        self._unwatch()
        if self._resume_timer is not None:
            IOLoop.current().remove_timeout(self._resume_timer)
            self._resume_timer = None
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    def _watch(self) -> None:
        if self._watching or not self.sockets:
            return
        loop = IOLoop.current()
        for sock in self.sockets:
            loop.add_handler(sock, self._readable, IOLoop.READ)
        self._watching = True

    def _unwatch(self) -> None:
        if not self._watching:
            return
        loop = IOLoop.current()
        for sock in self.sockets:
            loop.remove_handler(sock)
        self._watching = False

    def _readable(self, sock: socket.socket, _events: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:  # the client gave up while in the backlog
                continue
            except OSError as exc:
                self._back_off(exc)
                return
            self._accepted(conn, address)

    def _back_off(self, exc: OSError) -> None:
        """Stop watching the listening sockets for ``pause`` seconds (nginx's way)."""
        self.paused += 1
        kind = errno.errorcode.get(exc.errno or 0, "accept_error")
        level = logging.ERROR if exc.errno in EXHAUSTED else logging.WARNING
        self.throttle.log(f"accept_{kind}", level,
                          "accept() failed: %s; not accepting connections for %g s "
                          "(raise the open-files limit, ulimit -n, or lower the load)",
                          exc, self.pause)
        self._unwatch()
        self._resume_timer = IOLoop.current().call_later(self.pause, self._resume)

    def _resume(self) -> None:
        self._resume_timer = None
        self._watch()

    def _accepted(self, conn: socket.socket, address: Any) -> None:
        ip = peer_ip(address)
        if self.http.pending.get(ip, 0) + self.open_per_ip(ip) > self.max_per_ip:
            self.refused += 1
            conn.close()
            self.throttle.log("pending_per_ip", logging.WARNING,
                              "closed a connection from %s at accept: it holds more than "
                              "max_connections_per_ip=%d", ip, self.max_per_ip)
            if self.on_refused is not None:
                self.on_refused(ip)
            return
        stream: IOStream
        sizes = {"max_buffer_size": self.http.max_buffer_size,  # as TCPServer makes streams
                 "read_chunk_size": self.http.read_chunk_size}
        if self.ssl_options is not None:
            try:
                tls = ssl_wrap_socket(conn, self.ssl_options, server_side=True,
                                      do_handshake_on_connect=False)
            except (ssl.SSLError, OSError):  # the client is already gone
                conn.close()
                return
            stream = SSLIOStream(tls, **sizes)
        else:
            stream = IOStream(conn, **sizes)
        self.http.handle_stream(stream, address)


__all__ = ["ACCEPTS_PER_EVENT", "AcceptLoop", "EdgeHTTPServer", "peer_ip"]

"""The ``Host`` check against DNS rebinding, run on every HTTP request before any handler.

A page served from ``http://evil.example:PORT`` whose DNS name the attacker then
points to 127.0.0.1 is same-origin with itself: its requests to a server on this
machine carry ``Host`` and ``Origin`` of ``evil.example:PORT`` (and
``Sec-Fetch-Site: same-origin``), which Tornado's WebSocket origin check accepts
before ``check_origin`` runs. Jupyter's server refuses such requests by their
``Host`` header when it listens on loopback (``allow_remote_access``); so does
:class:`HostGuard`, wrapped around the Tornado application so that every request
(WebSocket upgrades, the HTTP API, static files, 404s) goes through it first.
Policy: :func:`realtime_lab.core.security.host_allowed` and ``ServerOptions.allowed_hosts``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from tornado import httputil

from realtime_lab.core.security import host_allowed
from realtime_lab.logthrottle import LogThrottle

log = logging.getLogger("realtime_lab.transports")

_REFUSAL = b"403 Forbidden: this server does not answer for that Host (allowed_hosts)\n"


def effective_allowed_hosts(allowed: tuple[str, ...] | None,
                            sockets: Iterable[socket.socket]) -> tuple[str, ...] | None:
    """The hosts to enforce: ``allowed`` when given; when None, loopback only (``()``)
    if every listening socket is on a loopback address, else no check (None)."""
    if allowed is not None:
        return allowed
    for sock in sockets:
        try:
            if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
                return None
        except ValueError:  # not an IP socket: do not guess
            return None
    return ()


class HostGuard(httputil.HTTPServerConnectionDelegate):
    """Wraps the application: requests whose ``Host`` is not allowed get 403, the rest
    go to the application unchanged. ``on_refused(remote)`` counts each refusal."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate,
                 allowed: tuple[str, ...] | None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.allowed = allowed
        self.on_refused = on_refused
        self.throttle = LogThrottle(log, interval=60.0)

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = self.app.start_request(server_conn, request_conn)
        if self.allowed is None:
            return delegate
        return _CheckedRequest(self, delegate, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def refuse(self, request_conn: httputil.HTTPConnection, host: str | None) -> None:
        remote = str(getattr(getattr(request_conn, "context", None), "remote_ip", "") or "")
        self.throttle.log("forbidden_host", logging.WARNING,
                          "refused a request from %s for Host %r: not in allowed_hosts "
                          "(DNS rebinding protection; docs/security.md)", remote,
                          (host or "")[:100])
        if self.on_refused is not None:
            self.on_refused(remote)
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8",
                                        "Content-Length": str(len(_REFUSAL)),
                                        "Connection": "close"})
        request_conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 403, "Forbidden"),
                                   headers, _REFUSAL)
        request_conn.finish()


class _CheckedRequest(httputil.HTTPMessageDelegate):
    """One request: checked when its head arrives, then passed on (or dropped)."""

    def __init__(self, guard: HostGuard, delegate: httputil.HTTPMessageDelegate,
                 request_conn: httputil.HTTPConnection) -> None:
        self.guard = guard
        self.delegate = delegate
        self.request_conn = request_conn
        self.refused = False

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        host = headers.get("Host")
        if not host_allowed(host, self.guard.allowed):
            self.refused = True
            self.guard.refuse(self.request_conn, host)
            return None
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        if self.refused:
            return None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()


__all__ = ["HostGuard", "effective_allowed_hosts"]

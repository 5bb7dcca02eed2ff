"""WebSocket over HTTP/2 (RFC 8441) and HTTP/2 requests, on the HTTP/1.1 port.

Opt in with ``ServerOptions(http2=True)`` (``realtime-lab serve --http2``);
needs the ``h2`` package: ``pip install 'realtime_lab[http2]'``. See docs/http2.md.
"""

from __future__ import annotations

try:
    import h2  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "HTTP/2 needs the h2 package: pip install 'realtime_lab[http2]'") from exc

from realtime_lab.transports.http2.listener import ALPN_PROTOCOLS, PREFACE, H2Listener
from realtime_lab.transports.http2.request import H2Request, RequestRouter
from realtime_lab.transports.http2.session import (
    CONNECTION_WINDOW,
    MAX_STREAMS,
    STREAM_SEND_CAP,
    STREAM_WINDOW,
    H2Session,
)
from realtime_lab.transports.http2.websocket import WebSocketStream

__all__ = ["ALPN_PROTOCOLS", "CONNECTION_WINDOW", "MAX_STREAMS", "PREFACE", "STREAM_SEND_CAP",
           "STREAM_WINDOW", "H2Listener", "H2Request", "H2Session", "RequestRouter",
           "WebSocketStream"]

"""The WebSocket under a client: open one, write and read frames, tear it down.

Everything Tornado-specific about one connection lives here; the rest of the
client sees a :class:`~tornado.websocket.WebSocketClientConnection` and these
functions.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from realtime_lab.client.options import ClientOptions
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol import codec

log = logging.getLogger("realtime_lab.client")
_throttle = LogThrottle(log)

MSGPACK_SUBPROTOCOL = "realtime-lab.v1.msgpack"
#: A connect token, or a function (sync or async) returning one, called per attempt.
TokenSource = str | Callable[[], "str | Awaitable[str]"] | None


class NotSent(Exception):
    """A write failed because the connection is gone: the message never left."""


async def attempt_url(url: str, user: str | None, token: TokenSource) -> str:
    """The URL of one attempt: ``user`` and a fresh ``token`` in the query."""
    query: dict[str, str] = {}
    if user is not None:
        query["user"] = user
    if callable(token):
        produced = token()
        token = await produced if inspect.isawaitable(produced) else produced
    if token is not None:
        query["token"] = str(token)
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(query)


async def open_socket(url: str, options: ClientOptions,
                      timeout: float) -> WebSocketClientConnection:
    """TCP connect and WebSocket handshake (raises what Tornado raises, or a timeout).

    A server that answers ``client_no_context_takeover`` gets a second handshake
    without compression: Tornado's client drops that value-less parameter and
    keeps its compression context, so its second compressed message would be
    refused (1002).
    """
    ws = await _handshake(url, options, timeout, options.compression)
    if options.compression and _needs_no_context_takeover(ws):
        _throttle.log("no_context_takeover", logging.WARNING,
                      "%s answers client_no_context_takeover, which Tornado's client cannot "
                      "honour: connecting without compression", url.split("?")[0])
        ws.close()
        ws = await _handshake(url, options, timeout, False)
    return ws


async def _handshake(url: str, options: ClientOptions, timeout: float,
                     compression: bool) -> WebSocketClientConnection:
    request = HTTPRequest(url, connect_timeout=timeout, request_timeout=timeout)
    return await asyncio.wait_for(
        websocket_connect(
            request, max_message_size=options.max_message_bytes,
            subprotocols=[MSGPACK_SUBPROTOCOL] if options.protocol == "msgpack" else None,
            compression_options={} if compression else None),
        timeout + 1)


def _needs_no_context_takeover(ws: WebSocketClientConnection) -> bool:
    answer = ws.headers.get("Sec-WebSocket-Extensions", "") if ws.headers else ""
    params = {p.strip().lower() for p in answer.split(";")}
    return "permessage-deflate" in params and "client_no_context_takeover" in params


def write(ws: WebSocketClientConnection, message: dict[str, Any]) -> Any:
    """Send one message in the protocol the server agreed (msgpack: a binary frame).

    Raises ``WebSocketClosedError`` once the connection is gone, as ``write_message``
    does (``selected_subprotocol`` would fail an assertion instead).
    """
    if ws.protocol is None:
        raise WebSocketClosedError()
    if ws.selected_subprotocol == MSGPACK_SUBPROTOCOL:
        from realtime_lab.protocol import msgpack_codec

        return ws.write_message(msgpack_codec.encode(message), binary=True)
    return ws.write_message(codec.encode(message))


def decode(raw: str | bytes) -> Any:
    """One inbound frame: text is JSON, binary is MessagePack."""
    if isinstance(raw, str):
        return codec.decode(raw)
    from realtime_lab.protocol import msgpack_codec

    return msgpack_codec.decode(raw)


def abort(ws: WebSocketClientConnection) -> None:
    """Tear the TCP connection down without a closing handshake (dead peer)."""
    protocol = ws.protocol
    stream = getattr(protocol, "stream", None)
    if stream is not None:
        stream.close()
    else:
        ws.close()

"""The WebSocket under a client: open one, write and read frames, tear it down.

Everything Tornado-specific about one connection lives here; the rest of the
client sees a :class:`~tornado.websocket.WebSocketClientConnection` and these
functions.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from realtime_lab.client.options import ClientOptions
from realtime_lab.protocol import codec

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
    """TCP connect and WebSocket handshake (raises what Tornado raises, or a timeout)."""
    request = HTTPRequest(url, connect_timeout=timeout, request_timeout=timeout)
    ws = await asyncio.wait_for(
        websocket_connect(
            request, max_message_size=options.max_message_bytes,
            subprotocols=[MSGPACK_SUBPROTOCOL] if options.protocol == "msgpack" else None,
            compression_options={} if options.compression else None),
        timeout + 1)
    honour_no_context_takeover(ws)
    return ws


def write(ws: WebSocketClientConnection, message: dict[str, Any]) -> Any:
    """Send one message in the protocol the server agreed (msgpack: a binary frame)."""
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


def honour_no_context_takeover(ws: WebSocketClientConnection) -> None:
    """Apply the ``*_no_context_takeover`` answers Tornado's client does not see.

    Tornado (6.6) drops extension parameters without a value when it parses the
    server's answer, so its permessage-deflate keeps both contexts: a server
    that asked for ``client_no_context_takeover`` then cannot inflate our second
    message, and a 32 KiB inflate window is kept for nothing.
    """
    answer = (getattr(ws, "headers", None) or {}).get("Sec-WebSocket-Extensions", "")
    proto = ws.protocol
    if "permessage-deflate" not in answer or proto is None:
        return
    params = {p.strip().lower() for p in answer.split(";")}
    compressor = getattr(proto, "_compressor", None)
    if "client_no_context_takeover" in params and compressor is not None:
        compressor._compressor = None  # a fresh zlib object per message
    decompressor = getattr(proto, "_decompressor", None)
    if "server_no_context_takeover" in params and decompressor is not None:
        decompressor._decompressor = None

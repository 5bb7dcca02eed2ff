"""A minimal asyncio client for the native protocol.

``client = await connect(server.url, user="ada")`` opens a connection and waits
for the welcome; ``await client.subscribe("room")`` waits for the server's
answer; ``await client.recv()`` or ``async for msg in client`` yields channel
messages and presence messages. Requests carry ids, so replies are matched even
when messages for channels arrive in between.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from tornado.websocket import WebSocketClientConnection, websocket_connect

from realtime_lab.client.presence import PresenceView
from realtime_lab.errors import ClientError, ConnectionClosed, RequestFailed

log = logging.getLogger("realtime_lab.client")

REPLY_TYPES = frozenset({"subscribed", "unsubscribed", "published", "pong", "error"})


class ClientState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Client:
    """One connection to a realtime_lab server.

    Args:
        url: the WebSocket endpoint, ``ws://HOST:PORT/ws``.
        user: user id for presence (default: the session id the server assigns).
        request_timeout: seconds to wait for the reply to a request.
        inbox_size: messages buffered for the reader; when full, the client stops
            reading the socket (so a client that never reads is a slow consumer).
    """

    def __init__(self, url: str, *, user: str | None = None, request_timeout: float = 10.0,
                 inbox_size: int = 10_000, max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self.url = url
        self.user = user
        self.request_timeout = request_timeout
        self.max_message_bytes = max_message_bytes
        self.state = ClientState.IDLE
        self.welcome: dict[str, Any] = {}
        self.presence = PresenceView()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ws: WebSocketClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(inbox_size)
        self._reader: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Future[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ connection

    @property
    def session(self) -> str | None:
        return self.welcome.get("session")

    async def connect(self, timeout: float = 10.0) -> Client:
        """Open the connection and wait for the welcome message."""
        if self.state is not ClientState.IDLE:
            raise ClientError(f"connect() called in state {self.state.value}")
        self.state = ClientState.CONNECTING
        url = self.url
        if self.user is not None:
            url += ("&" if "?" in url else "?") + urlencode({"user": self.user})
        loop = asyncio.get_running_loop()
        self._welcomed = loop.create_future()
        try:
            self._ws = await asyncio.wait_for(
                websocket_connect(url, max_message_size=self.max_message_bytes), timeout)
        except Exception:
            self.state = ClientState.CLOSED
            raise
        self._reader = asyncio.create_task(self._read_loop())
        try:
            self.welcome = await asyncio.wait_for(asyncio.shield(self._welcomed), timeout)
        except Exception:
            await self.close()
            raise
        self.state = ClientState.OPEN
        return self

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent) and wait for the reader to finish."""
        if self.state is ClientState.CLOSED and self._reader is None:
            return
        self.state = ClientState.CLOSING
        if self._ws is not None:
            self._ws.close(code, reason)
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
            self._reader = None
        self.state = ClientState.CLOSED

    async def __aenter__(self) -> Client:
        if self.state is ClientState.IDLE:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    break
                if isinstance(raw, bytes):
                    log.warning("ignoring a binary frame from the server")
                    continue
                msg = json.loads(raw)
                await self._handle(msg)
        finally:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason
            self.state = ClientState.CLOSED
            closed = ConnectionClosed(self.close_code, self.close_reason)
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_exception(closed)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(closed)
            self._pending.clear()
            try:
                self._inbox.put_nowait(None)
            except asyncio.QueueFull:
                pass

    async def _handle(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("type")
        if mtype == "welcome":
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(msg)
            return
        rid = msg.get("id")
        if mtype in REPLY_TYPES and rid is not None:
            fut = self._pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
                return
        if mtype in ("presence_state", "presence_diff"):
            self.presence.apply(msg)
        await self._inbox.put(msg)

    # ------------------------------------------------------------------ requests

    def _check_open(self) -> WebSocketClientConnection:
        if self.state is not ClientState.OPEN or self._ws is None:
            raise ConnectionClosed(self.close_code, self.close_reason or f"state {self.state.value}")
        return self._ws

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a message with a fresh id and wait for the reply with that id.

        Raises :class:`RequestFailed` when the reply is an ``error``.
        """
        ws = self._check_open()
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await ws.write_message(json.dumps({**message, "id": rid}))
        try:
            reply = await asyncio.wait_for(fut, self.request_timeout)
        finally:
            self._pending.pop(rid, None)
        if reply.get("type") == "error":
            raise RequestFailed(reply.get("code", "error"), reply.get("message", ""))
        return reply

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw protocol message without waiting for a reply."""
        await self._check_open().write_message(json.dumps(message))

    async def subscribe(self, channel: str) -> dict[str, Any]:
        return await self.request({"type": "subscribe", "channel": channel})

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        reply = await self.request({"type": "unsubscribe", "channel": channel})
        self.presence.forget(channel)
        return reply

    async def publish(self, channel: str, data: Any, *, ack: bool = False) -> dict[str, Any] | None:
        """Publish ``data``; with ``ack=True`` wait for the server's ``published`` reply."""
        if ack:
            return await self.request({"type": "publish", "channel": channel, "data": data})
        await self.send({"type": "publish", "channel": channel, "data": data})
        return None

    async def ping(self) -> float:
        """Round trip of an application-level ping, in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.request({"type": "ping"})
        return loop.time() - start

    # ------------------------------------------------------------------ receiving

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message that is not a reply (channel message, presence, error).

        Raises :class:`ConnectionClosed` once the connection is closed and the
        inbox is empty, and :class:`asyncio.TimeoutError` after ``timeout``.
        """
        msg = await asyncio.wait_for(self._inbox.get(), timeout)
        if msg is None:
            self._inbox.put_nowait(None)  # keep the end marker for later calls
            raise ConnectionClosed(self.close_code, self.close_reason)
        return msg

    async def recv_message(self, channel: str | None = None,
                           timeout: float | None = None) -> dict[str, Any]:
        """The next ``message`` (optionally for ``channel``), skipping other types."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            msg = await self.recv(remaining)
            if msg.get("type") == "message" and (channel is None or msg["channel"] == channel):
                return msg

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Wait until the connection is closed; return the close code."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosed:
                return


async def connect(url: str, *, user: str | None = None, timeout: float = 10.0,
                  **kwargs: Any) -> Client:
    """Connect to ``url`` and return an open :class:`Client`."""
    return await Client(url, user=user, **kwargs).connect(timeout)

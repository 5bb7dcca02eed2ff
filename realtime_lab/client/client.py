"""The asyncio client: one logical connection that can survive lost sockets.

``client = await connect(server.url, user="ada")`` opens a connection and waits
for the welcome; ``await client.subscribe("room")`` waits for the server's
answer; ``await client.recv()`` or ``async for msg in client`` yields channel
and presence messages. Requests carry ids, so replies are matched even when
channel messages arrive in between.

With ``reconnect=True`` a lost connection is re-established with backoff and
jitter, as the close code advises (:func:`realtime_lab.protocol.advice_for`):
the channels are subscribed again, the presence view is rebuilt from the new
``presence_state`` (or its pages), and messages sent meanwhile are buffered (bounded) and sent
after the restore. :attr:`Client.history`, :meth:`Client.on_state` and
:meth:`Client.state_changes` show every transition. A channel the server
removes the client from (an ``unsubscribed`` without ``id``: a kick) or refuses
on a resubscribe is forgotten and reported in ``recv()`` (docs/client.md).

This module is the public facade. The parts:
:mod:`~realtime_lab.client.connection` (the run loop: connect, restore, read,
reconnect), :mod:`~realtime_lab.client.state_machine` (states, history,
listeners), :mod:`~realtime_lab.client.transport` (the socket),
:mod:`~realtime_lab.client.replies` (request/reply matching),
:mod:`~realtime_lab.client.outbox` (the send buffer),
:mod:`~realtime_lab.client.inbox` (what ``recv()`` returns),
:mod:`~realtime_lab.client.subscriptions` (wanted channels, tokens, recovery
offsets), :mod:`~realtime_lab.client.presence_restore` and
:mod:`~realtime_lab.client.watchdog` (the client-side heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from realtime_lab.client import transport
from realtime_lab.client.connection import ConnectionLoop
from realtime_lab.client.inbox import Inbox
from realtime_lab.client.options import ClientOptions
from realtime_lab.client.outbox import Outbox, SendBufferFull
from realtime_lab.client.presence import PresenceView
from realtime_lab.client.presence_restore import PresenceRestore
from realtime_lab.client.replies import Replies, failure_of
from realtime_lab.client.state_machine import StateMachine
from realtime_lab.client.states import ClientState
from realtime_lab.client.subscriptions import ChannelAuth, Subscriptions
from realtime_lab.client.transport import NotSent, TokenSource
from realtime_lab.errors import ClientError, ConnectionClosed, RequestFailed

__all__ = ["ChannelAuth", "Client", "SendBufferFull", "TokenSource", "connect"]


class Client(StateMachine):
    """One logical connection to a realtime_lab server.

    Args:
        url: the WebSocket endpoint, ``ws://HOST:PORT/ws``.
        user: user id for presence (default: the session id the server assigns);
            sent again on every reconnection, so presence is restored under it.
        token: connect token sent as ``?token=``: a string, or a function (sync or
            async) called before every attempt, so an expiring token is renewed
            for each reconnection.
        options: a :class:`ClientOptions`; keyword arguments override single fields
            (``Client(url, reconnect=True, request_timeout=2)``).
    """

    def __init__(self, url: str, *, user: str | None = None, token: TokenSource = None,
                 options: ClientOptions | None = None, **option_values: Any) -> None:
        opts = options or ClientOptions()
        if option_values:
            opts = opts.with_changes(**option_values)
        super().__init__()
        self.url = url
        self.user = user
        self.token = token
        self.options = opts
        self.welcome: dict[str, Any] = {}
        self.presence = PresenceView()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.unsent: list[dict[str, Any]] = []
        self.connections = 0  # connections that reached OPEN
        self.reconnects = 0  # of which after a loss
        self._ws: WebSocketClientConnection | None = None
        self._replies = Replies()
        self._inbox = Inbox(opts.inbox_size)
        self._subs = Subscriptions()
        self._presence_restore = PresenceRestore()
        self._outbox = Outbox(opts.buffer_size)
        self._loop = ConnectionLoop(self)
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ properties

    @property
    def session(self) -> str | None:
        return self.welcome.get("session")

    @property
    def request_timeout(self) -> float:
        return self.options.request_timeout

    @property
    def max_message_bytes(self) -> int:
        return self.options.max_message_bytes

    @property
    def subscriptions(self) -> list[str]:
        """Channels this client wants; they are subscribed again after a reconnection."""
        return list(self._subs.wanted)

    @property
    def positions(self) -> dict[str, dict[str, Any]]:
        """channel -> ``{"offset", "epoch"}`` of the last message seen (history channels);
        sent as ``since`` when the channel is subscribed again after a reconnect."""
        return self._subs.positions

    @property
    def buffered(self) -> int:
        """Messages waiting for the connection to come back."""
        return len(self._outbox)

    # ------------------------------------------------------------------ states

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until the client is OPEN (connected, resubscribed); raise if it closes."""
        if self.state is ClientState.OPEN:
            return
        if self.state is ClientState.CLOSED:
            raise ConnectionClosed(self.close_code, self.close_reason)
        opened = asyncio.ensure_future(self._open_event.wait())
        waits: set[asyncio.Future[Any]] = {opened}
        if self._runner is not None:
            waits.add(self._runner)
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if self.state is ClientState.OPEN:
            return
        if self.state is ClientState.CLOSED:
            raise ConnectionClosed(self.close_code, self.close_reason)
        raise TimeoutError(f"client not open after {timeout}s (state {self.state.value})")

    def _notify(self, msg: dict[str, Any]) -> None:
        """Put a notice of the client's own (a refused resubscribe...) in the inbox.

        Never dropped, even when the inbox is full (see :mod:`~realtime_lab.client.inbox`).
        """
        self._inbox.put_notice(msg)

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, timeout: float | None = None) -> Client:
        """Open the connection, wait for the welcome (and retry when reconnect is on).

        Raises :class:`ConnectionClosed` or the connection error when the client
        gives up; ``timeout`` bounds each attempt (default ``connect_timeout``).
        """
        if self.state is not ClientState.IDLE:
            raise ClientError(f"connect() called in state {self.state.value}")
        self._first = asyncio.get_running_loop().create_future()
        attempt_timeout = timeout if timeout is not None else self.options.connect_timeout
        self._runner = asyncio.create_task(self._loop.run(attempt_timeout))
        try:
            await asyncio.shield(self._first)
        except asyncio.CancelledError:
            await self.close()
            raise
        return self

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good (idempotent): no more reconnection; wait for the end."""
        if self._runner is None or self.state is ClientState.CLOSED:
            if self.state is ClientState.IDLE:
                self._loop.finish(None, "closed before connecting")
            return
        if not self._closing:
            self._closing = True
            self._set_state(ClientState.CLOSING, code=code, reason=reason)
            self._loop.wake.set()
            if self._ws is not None:
                self._ws.close(code, reason)
        runner = self._runner
        try:
            await asyncio.wait_for(asyncio.shield(runner), 2.0)
        except TimeoutError:
            if self._ws is not None:
                transport.abort(self._ws)  # the server does not answer the close frame
            try:
                await asyncio.wait_for(asyncio.shield(runner), 1.0)
            except TimeoutError:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    async def __aenter__(self) -> Client:
        if self.state is ClientState.IDLE:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Wait until the client is CLOSED (for good); return the close code."""
        if self._runner is not None:
            await asyncio.wait_for(asyncio.shield(self._runner), timeout)
        return self.close_code

    # ------------------------------------------------------------------ sending

    def _can_buffer(self) -> bool:
        return (self.options.reconnect and not self._closing
                and self.state in (ClientState.CONNECTING, ClientState.RECONNECTING))

    def _reconnecting(self) -> bool:
        return self.options.reconnect and not self._closing and self.state is not ClientState.CLOSED

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code, self.close_reason or f"state {self.state.value}")

    async def _until_not_open(self) -> None:
        """After a write failed: wait for the reader to notice the loss (bounded)."""
        for _ in range(200):
            if self.state is not ClientState.OPEN:
                return
            await asyncio.sleep(0.01)

    async def request(self, message: dict[str, Any], *, retry: bool = False) -> dict[str, Any]:
        """Send a message with a fresh id and wait for the reply with that id.

        While reconnecting the request is buffered and sent after the restore.
        With ``retry=True`` (idempotent requests) a request whose connection is
        lost before the reply is sent again after the reconnection. Raises
        :class:`RequestFailed` when the reply is an ``error``.
        """
        while True:
            if self.state is ClientState.OPEN and self._ws is not None:
                try:
                    reply = await self._replies.request_on(self._ws, message,
                                                           self.options.request_timeout)
                except NotSent:
                    if not self._reconnecting():
                        raise self._closed_error() from None
                    await self._until_not_open()
                    continue
                except ConnectionClosed:
                    if not (retry and self._reconnecting()):
                        raise
                    await self._until_not_open()
                    continue
            elif self._can_buffer():
                fut = self._outbox.add(message, reply=True)
                assert fut is not None
                try:
                    reply = await asyncio.wait_for(fut, self.options.request_timeout)
                except TimeoutError:
                    self._outbox.drop(fut)
                    raise
            else:
                raise self._closed_error()
            failure = failure_of(reply)
            if failure is not None:
                raise failure
            return reply

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw protocol message without waiting for a reply (buffered while reconnecting)."""
        if self.state is ClientState.OPEN and self._ws is not None:
            try:
                await transport.write(self._ws, message)
                return
            except (WebSocketClosedError, StreamClosedError):
                if not self._reconnecting():
                    raise self._closed_error() from None
                await self._until_not_open()
        if not self._can_buffer():
            raise self._closed_error()
        self._outbox.add(message, reply=False)

    async def subscribe(self, channel: str, *, auth: ChannelAuth | None = None) -> dict[str, Any]:
        """Subscribe to ``channel``; it is subscribed again after every reconnection.

        ``auth``: for a private or presence channel, a channel token, or a callable
        ``(session_id, channel) -> token`` (may be async) called on every
        (re)subscribe: a token is bound to a session id, which changes on reconnect.
        """
        if auth is not None:
            self._subs.auth[channel] = auth
        pending = self._subs.pending
        pending[channel] = pending.get(channel, 0) + 1
        try:
            # the reader marks the channel wanted when the reply arrives (in wire order)
            return await self.request(await self._subs.message(channel, self.session or ""),
                                      retry=True)
        except RequestFailed:
            self._subs.refused(channel)
            raise
        finally:
            pending[channel] -= 1
            if not pending[channel]:
                del pending[channel]

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        """Unsubscribe; while reconnecting this only forgets the channel locally."""
        self.presence.forget(channel)
        if channel in self._subs.wanted and self.state is not ClientState.OPEN \
                and self._can_buffer():
            self._forget(channel)
            return {"type": "unsubscribed", "channel": channel}
        if self._loop.receipts is not None:
            self._loop.receipts.forget(channel)
        reply = await self.request({"type": "unsubscribe", "channel": channel})
        self._forget(channel)
        return reply

    def _forget(self, channel: str) -> None:
        """Drop everything kept for ``channel``: unsubscribed, refused on resubscribe,
        or removed by the server (an ``unsubscribed`` that answers no request: a kick)."""
        self._subs.forget(channel)
        self._presence_restore.forget(channel)
        self.presence.forget(channel)

    async def publish(self, channel: str, data: Any, *, ack: bool = False) -> dict[str, Any] | None:
        """Publish ``data``; with ``ack=True`` wait for the server's ``published`` reply.

        Without ``ack`` a message written to a socket that dies a moment later
        may be lost; use ``ack=True`` when that matters.
        """
        if ack:
            return await self.request({"type": "publish", "channel": channel, "data": data})
        await self.send({"type": "publish", "channel": channel, "data": data})
        return None

    async def set_presence(self, channel: str, *, state: str | None = None,
                           meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Change this user's presence state and/or metadata in ``channel`` (docs/presence.md)."""
        msg: dict[str, Any] = {"type": "presence", "channel": channel}
        if state is not None:
            msg["state"] = state
        if meta is not None:
            msg["meta"] = meta
        reply = await self.request(msg)
        self._presence_restore.remember(channel, msg)
        return reply

    async def ping(self) -> float:
        """Round trip of an application-level ping, in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.request({"type": "ping"})
        return loop.time() - start

    # ------------------------------------------------------------------ receiving

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message that is not a reply (channel message, presence, error, notice).

        Notices: ``unsubscribed`` without ``id`` (the server removed this client
        from the channel, which is then forgotten) and the client's own ``error``
        for a channel refused on resubscribe or a presence restore refused.

        Raises :class:`ConnectionClosed` once the client is closed for good and
        the inbox is empty, and :class:`asyncio.TimeoutError` after ``timeout``.
        """
        if self.state is ClientState.CLOSED and self._inbox.empty():
            # the end marker is not queued when the inbox was full at the close
            raise ConnectionClosed(self.close_code, self.close_reason)
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

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosed:
                return

    def __repr__(self) -> str:
        return f"<Client {self.url} user={self.user!r} state={self.state.value}>"


async def connect(url: str, *, user: str | None = None, token: TokenSource = None,
                  timeout: float | None = None, **kwargs: Any) -> Client:
    """Connect to ``url`` and return an open :class:`Client` (options as keywords)."""
    return await Client(url, user=user, token=token, **kwargs).connect(timeout)

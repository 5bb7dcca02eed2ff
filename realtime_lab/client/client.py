"""The asyncio client: one logical connection that can survive lost sockets.

``client = await connect(server.url, user="ada")`` opens a connection and waits
for the welcome; ``await client.subscribe("room")`` waits for the server's
answer; ``await client.recv()`` or ``async for msg in client`` yields channel
and presence messages. Requests carry ids, so replies are matched even when
channel messages arrive in between.

With ``reconnect=True`` a lost connection is re-established with backoff and
jitter, as the close code advises (:func:`realtime_lab.protocol.advice_for`):
the channels are subscribed again, the presence view is rebuilt from the new
``presence_state``, and messages sent meanwhile are buffered (bounded) and sent
after the restore. :attr:`Client.history`, :meth:`Client.on_state` and
:meth:`Client.state_changes` show every transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from realtime_lab.client.options import ClientOptions
from realtime_lab.client.presence import PresenceView
from realtime_lab.client.states import ClientState, StateChange
from realtime_lab.errors import ClientError, ConnectionClosed, ProtocolError, RequestFailed
from realtime_lab.protocol import codec
from realtime_lab.protocol.close_codes import ReconnectAdvice, advice_for

log = logging.getLogger("realtime_lab.client")

REPLY_TYPES = frozenset({"subscribed", "unsubscribed", "published", "pong", "error",
                         "presence"})
HISTORY_SIZE = 1000

StateListener = Callable[[StateChange], object]
TokenSource = str | Callable[[], "str | Awaitable[str]"] | None
#: A channel token, or ``(session_id, channel) -> token`` (sync or async).
ChannelAuth = str | Callable[[str, str], "str | Awaitable[str]"]
Outgoing = tuple[dict[str, Any], "asyncio.Future[dict[str, Any]] | None"]


class SendBufferFull(ClientError):
    """A message was sent while reconnecting and the buffer already holds ``buffer_size``."""


class _NotSent(Exception):
    """A write failed because the connection is gone: the message never left."""


class _Ended:
    """How one connection ended: close code, reason, whether it reached OPEN.

    ``fatal`` forces STOP advice (an HTTP 4xx refusal of the handshake);
    ``error`` is the exception of a failed connection attempt.
    """

    def __init__(self, code: int | None, reason: str, opened: bool, *, fatal: bool = False,
                 error: BaseException | None = None) -> None:
        self.code, self.reason, self.opened = code, reason, opened
        self.fatal, self.error = fatal, error


def _abort(ws: WebSocketClientConnection) -> None:
    """Tear the TCP connection down without a closing handshake (dead peer)."""
    protocol = ws.protocol
    stream = getattr(protocol, "stream", None)
    if stream is not None:
        stream.close()
    else:
        ws.close()


class Client:
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
        self.url = url
        self.user = user
        self.token = token
        self.options = opts
        self.state = ClientState.IDLE
        self.welcome: dict[str, Any] = {}
        self.presence = PresenceView()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.history: deque[StateChange] = deque(maxlen=HISTORY_SIZE)
        self.unsent: list[dict[str, Any]] = []
        self.connections = 0  # connections that reached OPEN
        self.reconnects = 0  # of which after a loss
        self._ws: WebSocketClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(opts.inbox_size)
        self._channels: dict[str, None] = {}  # wanted subscriptions, in order
        #: presence state/meta this client set per channel, sent again after a reconnect
        self._presence_wanted: dict[str, dict[str, Any]] = {}
        self._auth: dict[str, ChannelAuth] = {}  # channel -> token or token factory
        #: channel -> {"offset", "epoch"} of the last message seen (history channels);
        #: sent as ``since`` when the channel is subscribed again after a reconnect.
        self.positions: dict[str, dict[str, Any]] = {}
        self._outbox: deque[Outgoing] = deque()
        self._listeners: list[StateListener] = []
        self._watchers: list[asyncio.Queue[StateChange | None]] = []
        self._rng = random.Random(opts.seed)
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._welcomed: asyncio.Future[dict[str, Any]] | None = None
        self._open_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._last_seen = 0.0
        self._lost_at: float | None = None
        self._local_reason: str | None = None
        self._heartbeat_limit = 0.0

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
        return list(self._channels)

    @property
    def buffered(self) -> int:
        """Messages waiting for the connection to come back."""
        return len(self._outbox)

    # ------------------------------------------------------------------ states

    def on_state(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(change)`` on every transition; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def state_changes(self) -> AsyncIterator[StateChange]:
        """Yield transitions from now on; ends after ``CLOSED``."""
        queue: asyncio.Queue[StateChange | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while (change := await queue.get()) is not None:
                yield change
                if change.state is ClientState.CLOSED:
                    return
        finally:
            self._watchers.remove(queue)

    def _set_state(self, state: ClientState, **details: Any) -> StateChange:
        change = StateChange(state, self.state, time.monotonic(), **details)
        self.state = state
        self.history.append(change)
        if state is ClientState.OPEN:
            self._open_event.set()
        else:
            self._open_event.clear()
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("state listener %r failed", listener)
        for queue in self._watchers:
            queue.put_nowait(change)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %s: %s", self.user or self.session, change)
        return change

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
        self._runner = asyncio.create_task(self._run(attempt_timeout))
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
                self._finish(None, "closed before connecting")
            return
        if not self._closing:
            self._closing = True
            self._set_state(ClientState.CLOSING, code=code, reason=reason)
            self._wake.set()
            if self._ws is not None:
                self._ws.close(code, reason)
        runner = self._runner
        try:
            await asyncio.wait_for(asyncio.shield(runner), 2.0)
        except TimeoutError:
            if self._ws is not None:
                _abort(self._ws)  # the server does not answer the close frame
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

    # ------------------------------------------------------------------ the run loop

    async def _run(self, timeout: float) -> None:
        """Connect, serve the connection, and reconnect as the close code advises."""
        attempt = 0
        code: int | None = None
        reason = ""
        error: BaseException | None = None
        try:
            while True:
                self._set_state(ClientState.CONNECTING, attempt=attempt)
                ended = await self._connection(timeout, attempt)
                code, reason, error = ended.code, ended.reason, ended.error
                if self._closing:
                    break
                if ended.opened:
                    attempt = 0
                    self._lost_at = time.monotonic()
                advice = ReconnectAdvice.STOP if ended.fatal else advice_for(code)
                if not self.options.reconnect:
                    break
                if advice is ReconnectAdvice.STOP:
                    reason = f"{reason} (close code {code}: not reconnecting)"
                    break
                attempt += 1
                limit = self.options.max_attempts
                if limit is not None and attempt > limit:
                    reason = f"gave up after {limit} attempts; last: {reason}"
                    break
                if advice is ReconnectAdvice.RECONNECT_NOW and attempt == 1:
                    delay = self._rng.uniform(0.0, self.options.reconnect_now_window)
                else:
                    delay = self.options.backoff.delay(attempt, self._rng)
                self._set_state(ClientState.RECONNECTING, attempt=attempt, delay=delay,
                                code=code, reason=reason)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._closing:
                    break
        finally:
            self._finish(code, reason, error)

    async def _connection(self, timeout: float, attempt: int) -> _Ended:
        """One connection from TCP connect to its end; never raises."""
        try:
            url = await self._attempt_url()
        except Exception as exc:
            return _Ended(None, f"token provider failed: {type(exc).__name__}: {exc}", False,
                          fatal=True, error=exc)
        request = HTTPRequest(url, connect_timeout=timeout, request_timeout=timeout)
        try:
            ws = await asyncio.wait_for(
                websocket_connect(
                    request, max_message_size=self.options.max_message_bytes,
                    subprotocols=["realtime-lab.v1.msgpack"]
                    if self.options.protocol == "msgpack" else None,
                    compression_options={} if self.options.compression else None),
                timeout + 1)
        except HTTPClientError as exc:
            fatal = 400 <= exc.code < 500
            return _Ended(None, f"handshake refused: HTTP {exc.code} {exc.message}", False,
                          fatal=fatal, error=exc)
        except Exception as exc:  # refused, reset, timeout, a bad handshake response
            return _Ended(None, f"connect failed: {type(exc).__name__}: {exc}", False, error=exc)
        _honour_no_context_takeover(ws)
        self._ws = ws
        self._local_reason = None
        self._last_seen = time.monotonic()
        ws.on_ping = self._on_ping  # type: ignore[method-assign]
        self._welcomed = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(self._read_loop(ws))
        watchdog: asyncio.Task[None] | None = None
        opened = False
        try:
            self.welcome = await asyncio.wait_for(asyncio.shield(self._welcomed), timeout)
            watchdog = self._start_watchdog(ws)
            await asyncio.wait_for(self._restore(ws), timeout)
            if self._closing:
                raise ConnectionClosed(None, "closing")
            opened = True
            self._opened(attempt)
            await asyncio.shield(reader)
        except (TimeoutError, ConnectionClosed, RequestFailed, WebSocketClosedError):
            if not reader.done() and self._local_reason is None and not self._closing:
                self._local_reason = "no welcome or restore within the connect timeout"
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if not reader.done():
                _abort(ws)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, 2)
            self._ws = None
        reason = self._local_reason or ws.close_reason or (
            "connection lost" if ws.close_code is None else "")
        return _Ended(None if self._local_reason else ws.close_code, reason, opened)

    async def _attempt_url(self) -> str:
        """The URL of one attempt: ``user`` and a fresh ``token`` in the query."""
        query: dict[str, str] = {}
        if self.user is not None:
            query["user"] = self.user
        token = self.token
        if callable(token):
            produced = token()
            token = await produced if inspect.isawaitable(produced) else produced
        if token is not None:
            query["token"] = str(token)
        if not query:
            return self.url
        return self.url + ("&" if "?" in self.url else "?") + urlencode(query)

    def _opened(self, attempt: int) -> None:
        """The connection is restored: announce OPEN, then send what was buffered."""
        downtime = None
        if self._lost_at is not None:
            downtime = time.monotonic() - self._lost_at
            self.reconnects += 1
        self._lost_at = None
        self.connections += 1
        self._set_state(ClientState.OPEN, attempt=attempt, downtime=downtime)
        first = self._first
        if first is not None and not first.done():
            first.set_result(None)
        self._flush_outbox()

    def _finish(self, code: int | None, reason: str, error: BaseException | None = None) -> None:
        """Enter CLOSED for good: fail waiters, keep what was never sent.

        ``error`` (a failed connection attempt) is what :meth:`connect` raises when
        the client never opened; otherwise it raises :class:`ConnectionClosed`.
        """
        if self.state is ClientState.CLOSED:
            return
        self.close_code = code
        self.close_reason = reason
        closed = ConnectionClosed(code, reason)
        while self._outbox:
            message, fut = self._outbox.popleft()
            if fut is None:
                self.unsent.append(message)
            elif not fut.done():
                fut.set_exception(closed)
        if self.unsent:
            log.warning("client closed with %d unsent message(s): see client.unsent",
                        len(self.unsent))
        self._set_state(ClientState.CLOSED, code=code, reason=reason, unsent=len(self.unsent))
        first = self._first
        if first is not None and not first.done():
            first.set_exception(error if error is not None else closed)
        for queue in self._watchers:
            queue.put_nowait(None)
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)

    async def _restore(self, ws: WebSocketClientConnection) -> None:
        """Subscribe again to every wanted channel (pipelined) and prune presence."""
        channels = list(self._channels)
        replies = [self._request_on(ws, await self._subscribe_message(c, recover=True))
                   for c in channels]
        results = await asyncio.gather(*replies, return_exceptions=True)
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, RequestFailed):
                self._channels.pop(channel, None)
                self.presence.forget(channel)
                self._deliver({"type": "error", "code": result.code, "channel": channel,
                               "message": f"resubscribe to {channel!r} refused: {result.message}"})
            elif isinstance(result, BaseException):
                raise result
        for channel in list(self.presence.channels):
            if channel not in self._channels:
                self.presence.forget(channel)
        await self._restore_presence(ws)

    async def _restore_presence(self, ws: WebSocketClientConnection) -> None:
        """Set again the presence state and metadata this client had set (new session)."""
        wanted = [(c, w) for c, w in self._presence_wanted.items() if c in self._channels]
        replies = [self._request_on(ws, {"type": "presence", "channel": c, **w})
                   for c, w in wanted]
        results = await asyncio.gather(*replies, return_exceptions=True)
        for (channel, _), result in zip(wanted, results, strict=True):
            if isinstance(result, RequestFailed):
                self._deliver({"type": "error", "code": result.code, "channel": channel,
                               "message": f"presence restore in {channel!r} refused: "
                                          f"{result.message}"})
            elif isinstance(result, BaseException):
                raise result

    # ------------------------------------------------------------------ reading

    def _on_ping(self, data: bytes) -> None:
        self._last_seen = time.monotonic()

    def _start_watchdog(self, ws: WebSocketClientConnection) -> asyncio.Task[None] | None:
        if not self.options.heartbeat:
            return None
        limit = self.options.heartbeat_timeout
        if limit is None:
            beat = self.welcome.get("heartbeat") or {}
            if "interval" not in beat:
                return None
            limit = float(beat["interval"]) + float(beat.get("timeout", beat["interval"]))
        self._heartbeat_limit = limit
        return asyncio.create_task(self._watchdog(ws))

    def _heartbeat_changed(self, msg: dict[str, Any]) -> None:
        """An adaptive server announced a new ping interval: follow it."""
        if self.options.heartbeat_timeout is None and "interval" in msg:
            self._heartbeat_limit = float(msg["interval"]) + float(
                msg.get("timeout", msg["interval"]))

    async def _watchdog(self, ws: WebSocketClientConnection) -> None:
        """Abort the connection when the server has been silent for the heartbeat limit."""
        while True:
            limit = self._heartbeat_limit
            await asyncio.sleep(max(0.01, limit / 8))
            now = time.monotonic()
            if self._inbox.full():  # the reader waits for the user, not for the server
                self._last_seen = now
            elif now - self._last_seen > self._heartbeat_limit:
                self._local_reason = (f"heartbeat timeout: nothing from the server "
                                      f"for {now - self._last_seen:.2f}s (limit {limit:g}s)")
                log.info("client %s: %s", self.user or self.session, self._local_reason)
                _abort(ws)
                return

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    break
                self._last_seen = time.monotonic()
                try:
                    msg = codec.decode(raw) if isinstance(raw, str) else _unpack(raw)
                except (ValueError, ProtocolError):
                    log.warning("ignoring a frame that is not JSON: %.80r", raw)
                    continue
                await self._handle(msg)
        finally:
            closed = ConnectionClosed(ws.close_code, self._local_reason or ws.close_reason)
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_exception(closed)
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(closed)

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
        if mtype == "message" and "offset" in msg:
            self.positions[msg["channel"]] = {"offset": msg["offset"], "epoch": msg["epoch"]}
        elif mtype == "recovered" and not msg.get("complete") and msg.get("epoch"):
            # what could not be recovered is lost: go on from the server's position
            self.positions[msg["channel"]] = {"offset": msg["offset"], "epoch": msg["epoch"]}
        if mtype in ("presence_state", "presence_diff"):
            self.presence.apply(msg)
        elif mtype == "heartbeat":
            self._heartbeat_changed(msg)
        await self._inbox.put(msg)

    def _deliver(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(msg)

    # ------------------------------------------------------------------ sending

    def _can_buffer(self) -> bool:
        return (self.options.reconnect and not self._closing
                and self.state in (ClientState.CONNECTING, ClientState.RECONNECTING))

    def _buffer(self, message: dict[str, Any],
                reply: bool) -> asyncio.Future[dict[str, Any]] | None:
        if len(self._outbox) >= self.options.buffer_size:
            raise SendBufferFull(
                f"{len(self._outbox)} message(s) already wait for the connection to come back "
                f"(buffer_size={self.options.buffer_size}); this one was not sent")
        fut = asyncio.get_running_loop().create_future() if reply else None
        self._outbox.append((message, fut))
        return fut

    def _flush_outbox(self) -> None:
        ws = self._ws
        while self._outbox and ws is not None and self.state is ClientState.OPEN:
            message, fut = self._outbox.popleft()
            if fut is not None and fut.done():
                continue  # the caller timed out and gave up
            if fut is not None:
                rid = next(self._ids)
                message = {**message, "id": rid}
                self._pending[rid] = fut
            try:
                _write(ws, message)
            except WebSocketClosedError:
                if fut is not None:
                    self._pending.pop(message["id"], None)
                    message = {k: v for k, v in message.items() if k != "id"}
                self._outbox.appendleft((message, fut))
                return

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code, self.close_reason or f"state {self.state.value}")

    async def _request_on(self, ws: WebSocketClientConnection,
                          message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` with a fresh id on ``ws`` and wait for its reply.

        Raises :class:`_NotSent` when the write fails (safe to send again) and
        :class:`ConnectionClosed` when the connection ends before the reply.
        """
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                await _write(ws, {**message, "id": rid})
            except (WebSocketClosedError, StreamClosedError):
                raise _NotSent() from None
            return await asyncio.wait_for(fut, self.options.request_timeout)
        finally:
            self._pending.pop(rid, None)

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
                    reply = await self._request_on(self._ws, message)
                except _NotSent:
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
                fut = self._buffer(message, reply=True)
                assert fut is not None
                try:
                    reply = await asyncio.wait_for(fut, self.options.request_timeout)
                except TimeoutError:
                    self._drop_buffered(fut)
                    raise
            else:
                raise self._closed_error()
            if reply.get("type") == "error":
                raise RequestFailed(reply.get("code", "error"), reply.get("message", ""))
            return reply

    def _reconnecting(self) -> bool:
        return self.options.reconnect and not self._closing and self.state is not ClientState.CLOSED

    async def _until_not_open(self) -> None:
        """After a write failed: wait for the reader to notice the loss (bounded)."""
        for _ in range(200):
            if self.state is not ClientState.OPEN:
                return
            await asyncio.sleep(0.01)

    def _drop_buffered(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        for item in list(self._outbox):
            if item[1] is fut:
                self._outbox.remove(item)

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw protocol message without waiting for a reply (buffered while reconnecting)."""
        if self.state is ClientState.OPEN and self._ws is not None:
            try:
                await _write(self._ws, message)
                return
            except (WebSocketClosedError, StreamClosedError):
                if not self._reconnecting():
                    raise self._closed_error() from None
                await self._until_not_open()
        if not self._can_buffer():
            raise self._closed_error()
        self._buffer(message, reply=False)

    async def subscribe(self, channel: str, *, auth: ChannelAuth | None = None) -> dict[str, Any]:
        """Subscribe to ``channel``; it is subscribed again after every reconnection.

        ``auth``: for a private or presence channel, a channel token, or a callable
        ``(session_id, channel) -> token`` (may be async) called on every
        (re)subscribe: a token is bound to a session id, which changes on reconnect.
        """
        if auth is not None:
            self._auth[channel] = auth
        try:
            reply = await self.request(await self._subscribe_message(channel), retry=True)
        except RequestFailed:
            if channel not in self._channels:
                self._auth.pop(channel, None)
            raise
        self._channels[channel] = None
        if "epoch" in reply and channel not in self.positions:
            self.positions[channel] = {"offset": reply["offset"], "epoch": reply["epoch"]}
        return reply

    async def _subscribe_message(self, channel: str, *, recover: bool = False) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel}
        position = self.positions.get(channel)
        if recover and position is not None:
            msg["since"] = dict(position)
        auth = self._auth.get(channel)
        if callable(auth):
            produced = auth(self.session or "", channel)
            auth = await produced if inspect.isawaitable(produced) else produced
        if auth is not None:
            msg["auth"] = auth
        return msg

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        """Unsubscribe; while reconnecting this only forgets the channel locally."""
        self.presence.forget(channel)
        if channel in self._channels and self.state is not ClientState.OPEN \
                and self._can_buffer():
            self._channels.pop(channel, None)
            return {"type": "unsubscribed", "channel": channel}
        reply = await self.request({"type": "unsubscribe", "channel": channel})
        self._channels.pop(channel, None)
        self._auth.pop(channel, None)
        self.positions.pop(channel, None)
        self._presence_wanted.pop(channel, None)
        self.presence.forget(channel)
        return reply

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
        wanted = self._presence_wanted.setdefault(channel, {})
        wanted.update({k: v for k, v in msg.items() if k in ("state", "meta")})
        return reply

    async def ping(self) -> float:
        """Round trip of an application-level ping, in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.request({"type": "ping"})
        return loop.time() - start

    # ------------------------------------------------------------------ receiving

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message that is not a reply (channel message, presence, error).

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


def _write(ws: WebSocketClientConnection, message: dict[str, Any]) -> Any:
    """Send one message in the protocol the server agreed (msgpack: a binary frame)."""
    if ws.selected_subprotocol == "realtime-lab.v1.msgpack":
        from realtime_lab.protocol import msgpack_codec

        return ws.write_message(msgpack_codec.encode(message), binary=True)
    return ws.write_message(codec.encode(message))


def _unpack(raw: bytes) -> Any:
    from realtime_lab.protocol import msgpack_codec

    return msgpack_codec.decode(raw)


def _honour_no_context_takeover(ws: WebSocketClientConnection) -> None:
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

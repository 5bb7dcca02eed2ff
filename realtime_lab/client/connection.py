"""The run loop of a client: connect, restore, read, and reconnect as the close code advises."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Protocol

from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from realtime_lab.client import transport
from realtime_lab.client.receipts import ReceiptBatcher
from realtime_lab.client.states import ClientState
from realtime_lab.client.watchdog import Watchdog
from realtime_lab.errors import ConnectionClosed, ProtocolError, RequestFailed
from realtime_lab.protocol.close_codes import ReconnectAdvice, advice_for

if TYPE_CHECKING:
    from realtime_lab.client.inbox import Inbox
    from realtime_lab.client.options import ClientOptions
    from realtime_lab.client.outbox import Outbox
    from realtime_lab.client.presence import PresenceView
    from realtime_lab.client.presence_restore import PresenceRestore
    from realtime_lab.client.replies import Replies
    from realtime_lab.client.states import StateChange
    from realtime_lab.client.subscriptions import Subscriptions
    from realtime_lab.client.transport import TokenSource

log = logging.getLogger("realtime_lab.client")


class Ended:
    """How one connection ended: close code, reason, whether it reached OPEN.

    ``fatal`` forces STOP advice (an HTTP 4xx refusal of the handshake);
    ``error`` is the exception of a failed connection attempt.
    """

    def __init__(self, code: int | None, reason: str, opened: bool, *, fatal: bool = False,
                 error: BaseException | None = None) -> None:
        self.code, self.reason, self.opened = code, reason, opened
        self.fatal, self.error = fatal, error


class Owner(Protocol):
    """What the loop reads and sets of the client it serves
    (:class:`realtime_lab.client.Client` is one; this module does not import it)."""

    url: str
    user: str | None
    token: TokenSource
    options: ClientOptions
    state: ClientState
    welcome: dict[str, Any]
    presence: PresenceView
    close_code: int | None
    close_reason: str | None
    unsent: list[dict[str, Any]]
    connections: int
    reconnects: int
    _ws: WebSocketClientConnection | None
    _replies: Replies
    _inbox: Inbox
    _subs: Subscriptions
    _presence_restore: PresenceRestore
    _outbox: Outbox
    _first: asyncio.Future[None] | None
    _closing: bool
    _watchers: list[asyncio.Queue[StateChange | None]]

    @property
    def session(self) -> str | None: ...

    def _set_state(self, state: ClientState, **details: Any) -> StateChange: ...

    def _notify(self, msg: dict[str, Any]) -> None: ...

    def _forget(self, channel: str) -> None: ...


class ConnectionLoop:
    """Serves one :class:`~realtime_lab.client.Client`: one socket after another until
    the client stops."""

    def __init__(self, client: Owner) -> None:
        self.client = client
        self.rng = random.Random(client.options.seed)
        self.wake = asyncio.Event()
        self.watchdog = Watchdog(client.options.heartbeat, client.options.heartbeat_timeout)
        self.welcomed: asyncio.Future[dict[str, Any]] | None = None
        self.lost_at: float | None = None
        self.local_reason: str | None = None
        #: latency receipts of this connection (client/receipts.py), when both sides want them
        self.receipts: ReceiptBatcher | None = None

    async def run(self, timeout: float) -> None:
        """Connect, serve the connection, and reconnect as the close code advises."""
        client, options = self.client, self.client.options
        attempt = 0
        code: int | None = None
        reason = ""
        error: BaseException | None = None
        try:
            while True:
                client._set_state(ClientState.CONNECTING, attempt=attempt)
                ended = await self._connection(timeout, attempt)
                code, reason, error = ended.code, ended.reason, ended.error
                if client._closing:
                    break
                if ended.opened:
                    attempt = 0
                    self.lost_at = time.monotonic()
                advice = ReconnectAdvice.STOP if ended.fatal else advice_for(code)
                if not options.reconnect:
                    break
                if advice is ReconnectAdvice.STOP:
                    reason = f"{reason} (close code {code}: not reconnecting)"
                    break
                attempt += 1
                limit = options.max_attempts
                if limit is not None and attempt > limit:
                    reason = f"gave up after {limit} attempts; last: {reason}"
                    break
                if advice is ReconnectAdvice.RECONNECT_NOW and attempt == 1:
                    delay = self.rng.uniform(0.0, options.reconnect_now_window)
                else:
                    delay = options.backoff.delay(attempt, self.rng)
                client._set_state(ClientState.RECONNECTING, attempt=attempt, delay=delay,
                                  code=code, reason=reason)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
                if client._closing:
                    break
        finally:
            self.finish(code, reason, error)

    async def _connection(self, timeout: float, attempt: int) -> Ended:
        """One connection from TCP connect to its end; never raises."""
        client = self.client
        try:
            url = await transport.attempt_url(client.url, client.user, client.token)
        except Exception as exc:
            return Ended(None, f"token provider failed: {type(exc).__name__}: {exc}", False,
                         fatal=True, error=exc)
        try:
            ws = await transport.open_socket(url, client.options, timeout)
        except HTTPClientError as exc:
            fatal = 400 <= exc.code < 500
            return Ended(None, f"handshake refused: HTTP {exc.code} {exc.message}", False,
                         fatal=fatal, error=exc)
        except Exception as exc:  # refused, reset, timeout, a bad handshake response
            return Ended(None, f"connect failed: {type(exc).__name__}: {exc}", False, error=exc)
        client._ws = ws
        self.local_reason = None
        self.watchdog.seen()
        ws.on_ping = self.watchdog.seen  # type: ignore[method-assign]
        self.welcomed = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(self._read_loop(ws))
        watchdog: asyncio.Task[None] | None = None
        opened = False
        try:
            client.welcome = await asyncio.wait_for(asyncio.shield(self.welcomed), timeout)
            if client.options.receipts:
                self.receipts = ReceiptBatcher.for_welcome(
                    client.welcome, lambda msg: _write_quietly(ws, msg))
            watchdog = self.watchdog.start(client.welcome, client._inbox.full,
                                           lambda silence, limit: self._dead(ws, silence, limit))
            await asyncio.wait_for(self._restore(ws), timeout)
            if client._closing:
                raise ConnectionClosed(None, "closing")
            opened = True
            downtime = None if self.lost_at is None else time.monotonic() - self.lost_at
            self.lost_at = None
            self._opened(attempt, downtime)
            await asyncio.shield(reader)
        except (TimeoutError, ConnectionClosed, RequestFailed, WebSocketClosedError):
            if not reader.done() and self.local_reason is None and not client._closing:
                self.local_reason = "no welcome or restore within the connect timeout"
        finally:
            if self.receipts is not None:
                self.receipts.close()
                self.receipts = None
            if watchdog is not None:
                watchdog.cancel()
            if not reader.done():
                transport.abort(ws)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, 2)
            client._ws = None
        reason = self.local_reason or ws.close_reason or (
            "connection lost" if ws.close_code is None else "")
        return Ended(None if self.local_reason else ws.close_code, reason, opened)

    def _opened(self, attempt: int, downtime: float | None) -> None:
        """The connection is restored: announce OPEN, then send what was buffered."""
        client = self.client
        if downtime is not None:
            client.reconnects += 1
        client.connections += 1
        client._set_state(ClientState.OPEN, attempt=attempt, downtime=downtime)
        first = client._first
        if first is not None and not first.done():
            first.set_result(None)
        if client._ws is not None and client.state is ClientState.OPEN:
            client._outbox.flush(client._ws, client._replies)

    def finish(self, code: int | None, reason: str, error: BaseException | None = None) -> None:
        """Enter CLOSED for good: fail waiters, keep what was never sent.

        ``error`` (a failed connection attempt) is what :meth:`connect` raises when
        the client never opened; otherwise it raises :class:`ConnectionClosed`.
        """
        client = self.client
        if client.state is ClientState.CLOSED:
            return
        client.close_code = code
        client.close_reason = reason
        closed = ConnectionClosed(code, reason)
        client.unsent.extend(client._outbox.fail(closed))
        if client.unsent:
            log.warning("client closed with %d unsent message(s): see client.unsent",
                        len(client.unsent))
        client._set_state(ClientState.CLOSED, code=code, reason=reason, unsent=len(client.unsent))
        first = client._first
        if first is not None and not first.done():
            first.set_exception(error if error is not None else closed)
        for queue in client._watchers:
            queue.put_nowait(None)
        with contextlib.suppress(asyncio.QueueFull):
            client._inbox.put_nowait(None)

    def _dead(self, ws: WebSocketClientConnection, silence: float, limit: float) -> None:
        """The watchdog heard nothing for ``limit`` seconds: abort the connection."""
        self.local_reason = (f"heartbeat timeout: nothing from the server "
                             f"for {silence:.2f}s (limit {limit:g}s)")
        log.info("client %s: %s", self.client.user or self.client.session, self.local_reason)
        transport.abort(ws)

    async def _restore(self, ws: WebSocketClientConnection) -> None:
        """Subscribe again to every wanted channel (pipelined), prune presence, set it again."""
        client = self.client
        timeout = client.options.request_timeout
        refused = await client._subs.resubscribe(ws, client._replies, timeout,
                                                 client.session or "")
        for channel, failure in refused:
            client._forget(channel)
            client._notify({"type": "error", "code": failure.code, "channel": channel,
                            "message": f"resubscribe to {channel!r} refused: {failure.message}"})
        for channel in {*client.presence.channels, *client.presence.counts}:
            if channel not in client._subs.wanted:
                client.presence.forget(channel)
        refused = await client._presence_restore.restore(ws, client._replies, timeout,
                                                         client._subs.wanted)
        for channel, failure in refused:
            client._notify({"type": "error", "code": failure.code, "channel": channel,
                            "message": f"presence restore in {channel!r} refused: "
                                       f"{failure.message}"})

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    break
                self.watchdog.seen()
                try:
                    msg = transport.decode(raw)
                except (ValueError, ProtocolError):
                    log.warning("ignoring a frame that is not JSON: %.80r", raw)
                    continue
                await self._handle(msg)
        finally:
            closed = ConnectionClosed(ws.close_code, self.local_reason or ws.close_reason)
            if self.welcomed is not None and not self.welcomed.done():
                self.welcomed.set_exception(closed)
            self.client._replies.fail_all(closed)

    async def _handle(self, msg: dict[str, Any]) -> None:
        client = self.client
        mtype = msg.get("type")
        if mtype == "welcome":
            if self.welcomed is not None and not self.welcomed.done():
                self.welcomed.set_result(msg)
            return
        if client._replies.resolve(msg):
            if mtype == "subscribed":
                client._subs.confirmed(msg)
            return
        channel = msg.get("channel")
        if mtype == "unsubscribed":
            # answers no request: the server removed this connection (hub.kick, any
            # reason); forget the channel and hand the notice to recv()
            if isinstance(channel, str):
                client._forget(channel)
        elif mtype == "heartbeat":
            self.watchdog.changed(msg)
        elif not client._subs.is_left(channel):  # not a straggler of a channel left
            client._subs.track(msg)
            if mtype == "message" and self.receipts is not None:
                self.receipts.note(msg)
            if mtype in ("presence_state", "presence_diff", "presence_page", "presence_count",
                         "presence_mode"):
                client.presence.apply(msg)
        await client._inbox.put(msg)


def _write_quietly(ws: WebSocketClientConnection, message: dict[str, Any]) -> None:
    """Send a message nobody waits for (a receipt); a closed socket just drops it."""
    try:
        future = transport.write(ws, message)
    except WebSocketClosedError:
        return
    future.add_done_callback(lambda f: f.cancelled() or f.exception())

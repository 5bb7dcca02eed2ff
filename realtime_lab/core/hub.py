"""The hub: sessions, channels, presence, broadcast. No sockets, no Tornado.

A transport calls :meth:`Hub.open` when a WebSocket handshake completes,
:meth:`Hub.receive_text` / :meth:`Hub.receive_binary` for each inbound message,
:meth:`Hub.pong` for each pong frame and :meth:`Hub.closed` when the socket is
gone. The hub answers by writing prebuilt frames through the session's
:class:`~realtime_lab.core.ports.ConnectionPort`.

Broadcast encodes once: a publish serializes its message and builds its frame
once, then appends the same ``bytes`` object to each subscriber's pending list.
Pending frames are written at the end of the event-loop turn, one write per
connection however many frames it got in that turn.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.authz import rule_for
from realtime_lab.core.channel_meta import ChannelMeta
from realtime_lab.core.channels import Channel
from realtime_lab.core.delivery import Delivery
from realtime_lab.core.error_limit import INVALID_INPUT_CODES, count_invalid
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.history import History, Recovery
from realtime_lab.core.hooks import ConnectRequest, Hooks, refused, then
from realtime_lab.core.liveness import Liveness
from realtime_lab.core.membership import Membership, validate_channel_for
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import Inbound, compose
from realtime_lab.core.ports import (
    BroadcastProbe,
    Clock,
    ClusterPort,
    ConnectionPort,
    Scheduler,
)
from realtime_lab.core.presence import CLOSED, TIMEOUT, Presence
from realtime_lab.core.security import Admission, verify_token
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import (
    BinaryNotSupported,
    ConnectRefused,
    Forbidden,
    InternalError,
    MessageRefused,
    NotSubscribed,
    ProtocolError,
    Unauthorized,
    UnsubscribeRefused,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, MSGPACK

log = logging.getLogger("realtime_lab.core")

#: error code -> the option (limit) it enforces, for ``limit.exceeded`` events.
LIMIT_OF_ERROR = {
    "too_many_subscriptions": "max_subscriptions",
    "bad_channel": "channel_name",
    "forbidden": "publish_channels",
    "rate_limited": "rate_limit",
    "rate_limit_abuse": "rate_limit",
    "server_full": "max_connections",
    "too_many_connections_from_ip": "max_connections_per_ip",
    "idle_timeout": "idle_timeout",
    "unauthorized": "connect_token",
    "token_expired": "connect_token",
    "presence_full": "max_presence_members",
    "presence_meta_too_large": "max_presence_meta_bytes",
    "too_many_errors": "error_limit",
}
TIMEOUT_CODES = (CloseCode.HEARTBEAT_TIMEOUT, CloseCode.IDLE_TIMEOUT)


def _run_now(callback: Callable[[], None]) -> None:
    callback()


class Hub(Membership, Presence, Recovery, ChannelMeta, Delivery, Liveness):
    """Channels, presence and broadcast for a set of connections.

    The hub is split by concern: this module holds admission, the inbound path
    and lifecycle; :mod:`~realtime_lab.core.membership` channels, presence and
    broadcast; :mod:`~realtime_lab.core.delivery` the outbound queues and writes;
    :mod:`~realtime_lab.core.liveness` heartbeat and idle checks.
    """

    recorder: BroadcastProbe | None = None  # set by realtime_lab.instrument.Recorder.start()

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        clock: Clock = time.monotonic,
        schedule: Scheduler | None = None,
        hooks: Hooks | None = None,
        middleware: Sequence[object] = (),
        bus: EventBus | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        #: Events (docs/events.md); built only when someone listens (``bus.active``).
        self.bus = bus or EventBus()
        self.hooks = hooks or Hooks()
        self.set_middleware(middleware)
        opts = self.options
        self.admission = Admission(opts.max_connections, opts.max_connections_per_ip)
        self.heartbeat = HeartbeatPolicy(opts)
        #: Seconds between heartbeat ticks (set by the server; 0 = unknown, no lag measure).
        self.tick_period = 0.0
        self._last_tick: float | None = None
        self._last_frame_size = 0
        dp = opts.droppable_priority
        self._droppable = -1 if dp == "none" else int(Priority.parse(dp))
        pub = opts.publish_channels
        pats = [pub] if isinstance(pub, str) else list(pub)
        self._publish_re: re.Pattern[str] | None = None if "*" in pats else re.compile(
            "|".join(f"(?:{fnmatch.translate(p)})" for p in pats) or "(?!)")
        self._channel_rules = opts.active_channel_rules()  # core/authz.py
        self._channel_meta: dict[str, dict[str, object]] = {}  # set_channel_metadata
        self._grace_timer: asyncio.TimerHandle | None = None  # core/presence.py
        self._idle_users: dict[str, set[str]] = {}
        self._histories: dict[str, History] = {}  # core/history.py
        self.clock = clock
        self._schedule: Scheduler = schedule or _run_now
        self.sessions: dict[str, Session] = {}
        self.channels: dict[str, Channel] = {}
        self.stats = HubStats()
        self._dirty: list[Session] = []
        self._flush_scheduled = False
        #: Set by realtime_lab.broker.ClusterNode when this hub is one node of several.
        self.cluster: ClusterPort | None = None

    # ------------------------------------------------------------------ lifecycle

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Install the middleware chain (realtime_lab.middleware), first = outermost."""
        self.middleware = tuple(middleware)
        self._inbound = compose(self.middleware, self._inbound_endpoint, "inbound")
        self._outbound = compose(self.middleware, self._outbound_endpoint, "outbound")
        self._closers = [m for m in self.middleware if hasattr(m, "connection_closed")]

    def open(self, port: ConnectionPort, *, user: str | None = None,
             request: ConnectRequest | None = None) -> Any:
        """Admit a new connection and send it the welcome message; return its session.

        Checks the connection limits, the connect token and the ``on_connect``
        hook. A refused connection gets an error message and its close code, and
        comes back in state CLOSING. With an async ``on_connect`` the return value
        is an awaitable of the session (the transport awaits it).
        """
        sid = secrets.token_hex(8)
        now = self.clock()
        remote = port.remote
        session = Session(id=sid, user=user or sid, port=port, connected_at=now, last_seen=now,
                          last_ping_at=now, remote=remote, last_activity=now)
        session.wire = getattr(port, "wire", JSON_WIRE)  # codec + compression (handshake)
        req = request or ConnectRequest(remote=remote, user=user)
        try:
            self.admission.check(remote)
            user = self._authenticate(req, user)
            result = self.hooks.run("on_connect", req) if self.hooks.on_connect else None
        except ProtocolError as err:
            return self._refuse(session, err)
        self.admission.add(sid, remote)
        if inspect.isawaitable(result):
            return PendingOpen(session, self._open_later(session, user, result))
        return self._accept(session, user, result)

    def refused_handshake(self, remote: str, code: int, reason: str, limit: str) -> None:
        """The transport refused a handshake (e.g. HTTP 403 for an origin): count, emit."""
        self.stats.refused += 1
        log.info("refused a handshake from %s: %s %s", remote, code, reason)
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ConnectionRefused(at=now, remote=remote, code=code, reason=reason))
            self.bus.emit(ev.LimitExceeded(at=now, limit=limit, code=code, remote=remote))

    def _authenticate(self, req: ConnectRequest, user: str | None) -> str | None:
        opts = self.options
        if opts.token_secret is None and opts.token_verifier is None:
            return user
        if opts.token_verifier is not None:
            try:
                out = opts.token_verifier(req.token) if req.token else None
            except ProtocolError:
                raise
            except Exception:
                log.exception("token_verifier failed")
                raise Unauthorized("the connect token could not be verified") from None
            if not out:
                raise Unauthorized("connect token refused")
            claims = out if isinstance(out, dict) else {"user": str(out)}
        else:
            assert opts.token_secret is not None
            claims = verify_token(opts.token_secret, req.token)
        given = claims.get("user")
        return str(given) if given else user

    async def _open_later(self, session: Session, user: str | None,
                          result: Awaitable[Any]) -> Session:
        try:
            value = await result
        except ProtocolError as err:
            if session.state is ConnectionState.CLOSED:
                self.admission.remove(session.id)
                return session
            return self._refuse(session, err)
        return self._accept(session, user, value)

    def _accept(self, session: Session, user: str | None, result: Any) -> Session:
        if session.state is ConnectionState.CLOSED:  # gone while an async hook ran
            self.admission.remove(session.id)
            return session
        verdict = refused(result)
        if verdict is not None:
            err = ConnectRefused(verdict.reason)
            if isinstance(verdict.code, int):
                err.close_code = verdict.code  # type: ignore[misc]
            return self._refuse(session, err)
        if isinstance(result, dict):
            user = result.get("user") or user
            session.metadata.update(result.get("metadata") or {})
        if user:
            session.user = str(user)
        session.ping_factor = self.heartbeat.ping_factor()
        self.sessions[session.id] = session
        session.state = ConnectionState.OPEN
        self.stats.connections_opened += 1
        self.send(session, self._welcome(session))
        if self.bus.active:
            self.bus.emit(ev.Connected(at=self.clock(), session=session.id, user=session.user,
                                       remote=session.remote, metadata=dict(session.metadata)))
        return session

    def _welcome(self, session: Session) -> dict[str, Any]:
        hb = self.heartbeat
        msg = messages.welcome_message(session.id, session.user, hb.interval, hb.timeout,
                                       self.options.limits())
        if hb.adaptive:
            msg["heartbeat"].update(adaptive=True, min=hb.min_interval, max=hb.max_interval)
        return msg

    def _refuse(self, session: Session, err: ProtocolError) -> Session:
        """Refuse a connection that was never opened: error message, then close code."""
        self.stats.refused += 1
        self.admission.remove(session.id)
        code = err.close_code if err.close_code is not None else CloseCode.CONNECT_REFUSED
        session.state = ConnectionState.CLOSING
        session.close_code, session.close_reason = code, err.code
        log.info("refused %s (%s): %s %s", session.id, session.remote, code, err.message)
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ConnectionRefused(at=now, session=session.id, user=session.user,
                                               remote=session.remote, code=code, reason=err.code))
            limit = LIMIT_OF_ERROR.get(err.code)
            if limit is not None:
                self.bus.emit(ev.LimitExceeded(at=now, session=session.id, user=session.user,
                                               limit=limit, code=code, remote=session.remote))
        session.port.write(text_frame(codec.encode(messages.error_message(err.code, err.message))))
        session.port.close(code, err.code)
        return session

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close a connection from the server side with ``code``."""
        if session.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        session.state = ConnectionState.CLOSING
        session.close_code = code
        session.close_reason = reason
        self._flush_session(session, force=True)
        session.port.close(code, reason)

    def closed(self, session: Session, code: int | None = None, reason: str = "") -> None:
        """The transport reports the socket closed: drop subscriptions and presence."""
        if session.state is ConnectionState.CLOSED:
            return
        registered = self.sessions.get(session.id) is session
        session.state = ConnectionState.CLOSED
        if session.close_code is None:
            session.close_code = code
            session.close_reason = reason
        session.pending.clear()
        session.pending_bytes = 0
        self.admission.remove(session.id)
        if not registered:  # refused, or gone before an async on_connect finished
            return
        reason = TIMEOUT if session.close_code in TIMEOUT_CODES else CLOSED
        for name in list(session.subscriptions):
            self._leave(session, name, reason=reason)
        self.sessions.pop(session.id, None)
        self.stats.connections_closed += 1
        for mw in self._closers:
            try:
                mw.connection_closed(session)  # type: ignore[attr-defined]
            except Exception:
                log.exception("middleware %r failed in connection_closed", mw)
        if self.hooks.on_disconnect is not None:
            self._fire_and_forget("on_disconnect", session, session.close_code,
                                  session.close_reason)
        if self.bus.active:
            now = self.clock()
            if session.close_code == CloseCode.MESSAGE_TOO_BIG:  # closed by the transport
                self.bus.emit(ev.LimitExceeded(
                    at=now, session=session.id, user=session.user, limit="max_message_bytes",
                    code=CloseCode.MESSAGE_TOO_BIG, remote=session.remote))
            self.bus.emit(ev.Disconnected(at=now, session=session.id, user=session.user,
                                          code=session.close_code, reason=session.close_reason))

    def _fire_and_forget(self, name: str, *args: Any) -> None:
        try:
            result = self.hooks.run(name, *args)
        except ProtocolError:
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server stopping") -> None:
        for session in list(self.sessions.values()):
            self.close(session, code, reason)

    # ------------------------------------------------------------------ inbound

    def receive_text(self, session: Session, text: str | bytes, *,
                     decode: Callable[[Any], Any] = codec.decode) -> Awaitable[None] | None:
        """Handle one inbound text message (or binary one, with the msgpack ``decode``).

        Returns None when done, or an awaitable when an async middleware or hook
        is still working; the transport awaits it before the next message of this
        connection, so each connection's messages are handled in order.
        """
        if session.state is not ConnectionState.OPEN:
            return None
        now = self.clock()
        session.last_seen = now
        session.last_activity = now
        if self._idle_users and session.user in self._idle_users:
            self._wake(session)  # an idled presence member is back
        session.stats.messages_in += 1
        session.stats.bytes_in += len(text)
        self.stats.messages_in += 1
        obj: Any = None
        try:
            obj = decode(text)
            inbound = self._inbound
            if inbound is None:
                result = self._handle(session, obj)
            else:
                result = inbound(Inbound(session, obj, len(text), now, self))
            if inspect.isawaitable(result):
                return self._finish(session, obj, result)
        except ProtocolError as err:
            self._reject_for(session, obj, err)
        except Exception:
            log.exception("failed to handle a message from %s", session.id)
            self._reject_for(session, obj, InternalError("the server failed on this message"))
        return None

    async def _finish(self, session: Session, obj: Any, result: Awaitable[Any]) -> None:
        try:
            await result
        except ProtocolError as err:
            self._reject_for(session, obj, err)
        except Exception:
            log.exception("failed to handle a message from %s", session.id)
            self._reject_for(session, obj, InternalError("the server failed on this message"))

    def _reject_for(self, session: Session, obj: Any, err: ProtocolError) -> None:
        if session.state is not ConnectionState.OPEN:
            return
        if err.request_id is None and isinstance(obj, dict):
            rid = obj.get("id")
            if isinstance(rid, int | str) and not isinstance(rid, bool):
                err.request_id = rid
        self.reject(session, err)

    def _inbound_endpoint(self, ctx: Inbound) -> Any:
        return self._handle(ctx.session, ctx.message)

    def _handle(self, session: Session, obj: Any) -> Any:
        msg = messages.parse_client_message(obj)
        if self.hooks.on_message is None:
            return self._dispatch(session, msg)
        result = self.hooks.run("on_message", session, obj)
        return then(result, lambda r: self._after_message_hook(session, msg, r))

    def _after_message_hook(self, session: Session, msg: messages.ClientMessage,
                            result: Any) -> Any:
        if session.state is not ConnectionState.OPEN:
            return None
        verdict = refused(result)
        if verdict is not None:
            self._drop(session, Priority.NORMAL, 0, "hook", getattr(msg, "channel", None))
            if msg.id is not None:
                err = MessageRefused(verdict.reason, request_id=msg.id)
                if isinstance(verdict.code, str):
                    err.code = verdict.code  # type: ignore[misc]
                raise err
            return None
        if isinstance(result, dict):
            msg = messages.parse_client_message(result)
        return self._dispatch(session, msg)

    def receive_binary(self, session: Session, data: bytes) -> Awaitable[None] | None:
        """A MessagePack message on the msgpack protocol; on JSON, an error."""
        if session.wire.codec == MSGPACK:
            from realtime_lab.protocol import msgpack_codec

            return self.receive_text(session, data, decode=msgpack_codec.decode)
        if session.state is not ConnectionState.OPEN:
            return None
        session.last_seen = self.clock()
        self.reject(session, BinaryNotSupported(
            "binary frames are not accepted on the JSON protocol; send JSON text frames"))
        return None

    def pong(self, session: Session) -> None:
        now = self.clock()
        if session.ping_sent_at is not None:
            session.rtt = now - session.ping_sent_at
            session.ping_sent_at = None
        session.last_seen = now

    def reject(self, session: Session, err: ProtocolError) -> None:
        """Answer a bad request with an error message, and close when the error is fatal."""
        session.stats.errors += 1
        self.stats.errors_sent += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %s: %s %s", session.id, err.code, err.message)
        self.send(session, messages.error_message(err.code, err.message, err.request_id))
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ErrorEvent(at=now, session=session.id, user=session.user,
                                        code=err.code, message=err.message))
            limit = LIMIT_OF_ERROR.get(err.code)
            if limit is not None:
                self.bus.emit(ev.LimitExceeded(
                    at=now, session=session.id, user=session.user, limit=limit,
                    code=err.close_code or err.code, remote=session.remote))
        if err.close_code is not None:
            self.close(session, err.close_code, err.code)
        elif err.code in INVALID_INPUT_CODES and self.options.error_limit is not None:
            too_many = count_invalid(session, self.clock(), self.options.error_limit)
            if too_many is not None:
                self.stats.too_many_errors += 1
                self.reject(session, too_many)

    def _dispatch(self, session: Session, msg: messages.ClientMessage) -> Any:
        if isinstance(msg, messages.Publish):
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server", request_id=msg.id)
            validate_channel_for(msg.channel, self.options, msg.id)
            if self._publish_re is not None and self._publish_re.match(msg.channel) is None:
                raise Forbidden(f"clients may not publish to {msg.channel!r}", request_id=msg.id)
            if self._channel_rules:
                self._check_publish_rule(session, msg.channel, msg.id)
            sender = None if self.options.echo_to_sender else session
            prio = Priority.NORMAL if msg.priority is None else Priority.parse(msg.priority)
            recipients = self._broadcast(msg.channel, msg.data, session.user, exclude=sender,
                                         priority=prio)
            if msg.id is not None:
                self.send(session, messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            result = self.subscribe(session, msg.channel, msg.id, msg.auth)
            if msg.since is None:
                return result
            since = msg.since  # recovery runs in the same step as the join: no gap
            return then(result, lambda _: self._recover_if_joined(session, msg.channel, since))
        elif isinstance(msg, messages.Unsubscribe):
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"not subscribed to {msg.channel!r}", request_id=msg.id)
            if self.hooks.on_unsubscribe is None:
                return self._unsubscribe(session, msg.channel, msg.id, None)
            result = self.hooks.run("on_unsubscribe", session, msg.channel)
            return then(result, lambda r: self._unsubscribe(session, msg.channel, msg.id, r))
        elif isinstance(msg, messages.SetPresence):  # on_presence, then the reply
            validate_channel_for(msg.channel, self.options, msg.id)
            return self.presence_message(session, msg)
        else:  # Ping
            self.send(session, messages.pong_message(msg.id))
        return None

    def _recover_if_joined(self, session: Session, name: str, since: dict[str, Any]) -> None:
        if session.state is ConnectionState.OPEN and name in session.subscriptions:
            self.recover(session, name, since)

    def _check_publish_rule(self, session: Session, channel: str,
                            rid: messages.RequestId) -> None:
        """Raise :class:`Forbidden` unless the channel's rule lets this client publish."""
        who = rule_for(channel, self._channel_rules).publish
        if who == "none":
            raise Forbidden(f"clients may not publish to {channel!r}", request_id=rid)
        if who == "subscribers" and channel not in session.subscriptions:
            raise Forbidden(f"only subscribers may publish to {channel!r}", request_id=rid)

    def _unsubscribe(self, session: Session, name: str, rid: messages.RequestId,
                     verdict: Any) -> None:
        if session.state is not ConnectionState.OPEN or name not in session.subscriptions:
            return
        refusal = refused(verdict)
        if refusal is not None:
            err = UnsubscribeRefused(refusal.reason, request_id=rid)
            if isinstance(refusal.code, str):
                err.code = refusal.code  # type: ignore[misc]
            raise err
        self._leave(session, name)
        self.send(session, messages.unsubscribed_message(name, rid))

    # ------------------------------------------------------------------ views

    def channel_list(self) -> list[dict[str, object]]:
        return [c.describe() for c in sorted(self.channels.values(), key=lambda c: c.name)]

    def presence(self, channel: str) -> dict[str, dict[str, object]]:
        ch = self.channels.get(channel)
        return ch.presence_members() if ch else {}


class PendingOpen:
    """What :meth:`Hub.open` returns while an async ``on_connect`` runs: await it."""

    __slots__ = ("_awaitable", "session")

    def __init__(self, session: Session, awaitable: Awaitable[Session]) -> None:
        self.session = session
        self._awaitable = awaitable

    def __await__(self) -> Any:
        return self._awaitable.__await__()

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
from dataclasses import dataclass
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.channels import Channel, validate_channel
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.hooks import ConnectRequest, Hooks, refused, then
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import Inbound, Outbound, compose
from realtime_lab.core.ports import (
    BroadcastProbe,
    Clock,
    ClusterPort,
    ConnectionPort,
    Scheduler,
)
from realtime_lab.core.security import Admission, verify_token
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.errors import (
    BinaryNotSupported,
    ConnectRefused,
    Forbidden,
    IdleTimeout,
    InternalError,
    MessageRefused,
    NotSubscribed,
    ProtocolError,
    SubscribeRefused,
    TooManySubscriptions,
    Unauthorized,
    UnsubscribeRefused,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, MSGPACK, FrameVariants, frame_for

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
}
TIMEOUT_CODES = (CloseCode.HEARTBEAT_TIMEOUT, CloseCode.IDLE_TIMEOUT)


@dataclass(slots=True)
class HubStats:
    """Counters since the hub started."""

    connections_opened: int = 0
    connections_closed: int = 0
    messages_in: int = 0
    published: int = 0
    deliveries: int = 0
    errors_sent: int = 0
    slow_consumers: int = 0
    heartbeat_timeouts: int = 0
    dropped: int = 0
    refused: int = 0
    idle_timeouts: int = 0


def _run_now(callback: Callable[[], None]) -> None:
    callback()


class Hub:
    """Channels, presence and broadcast for a set of connections."""

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
        timed_out = session.close_code in TIMEOUT_CODES
        for name in list(session.subscriptions):
            self._leave(session, name, timed_out=timed_out)
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

    def _dispatch(self, session: Session, msg: messages.ClientMessage) -> Any:
        if isinstance(msg, messages.Publish):
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server", request_id=msg.id)
            validate_channel_for(msg.channel, self.options, msg.id)
            if self._publish_re is not None and self._publish_re.match(msg.channel) is None:
                raise Forbidden(f"clients may not publish to {msg.channel!r}", request_id=msg.id)
            sender = None if self.options.echo_to_sender else session
            prio = Priority.NORMAL if msg.priority is None else Priority.parse(msg.priority)
            recipients = self._broadcast(msg.channel, msg.data, session.user, exclude=sender,
                                         priority=prio)
            if msg.id is not None:
                self.send(session, messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            return self.subscribe(session, msg.channel, msg.id)
        elif isinstance(msg, messages.Unsubscribe):
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"not subscribed to {msg.channel!r}", request_id=msg.id)
            if self.hooks.on_unsubscribe is None:
                return self._unsubscribe(session, msg.channel, msg.id, None)
            result = self.hooks.run("on_unsubscribe", session, msg.channel)
            return then(result, lambda r: self._unsubscribe(session, msg.channel, msg.id, r))
        else:  # Ping
            self.send(session, messages.pong_message(msg.id))
        return None

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

    # ------------------------------------------------------------------ channels

    def subscribe(self, session: Session, name: str, request_id: messages.RequestId = None) -> Any:
        """Subscribe ``session`` to channel ``name`` (idempotent).

        Runs the ``on_subscribe`` and ``on_presence`` hooks; returns an awaitable
        when one of them is async.
        """
        validate_channel_for(name, self.options, request_id)
        if name in session.subscriptions:
            self.send(session, messages.subscribed_message(name, request_id))
            return None
        self._check_subscription_limit(session, request_id)
        if self.hooks.on_subscribe is None:
            return self._join(session, name, request_id, None)
        result = self.hooks.run("on_subscribe", session, name)
        return then(result, lambda r: self._join_checked(session, name, request_id, r))

    def _check_subscription_limit(self, session: Session, request_id: messages.RequestId) -> None:
        if len(session.subscriptions) >= self.options.max_subscriptions:
            raise TooManySubscriptions(
                f"already subscribed to {len(session.subscriptions)} channels; "
                f"the limit is {self.options.max_subscriptions}", request_id=request_id)

    def _join_checked(self, session: Session, name: str, rid: messages.RequestId,
                      verdict: Any) -> Any:
        if session.state is not ConnectionState.OPEN:
            return None
        refusal = refused(verdict)
        if refusal is not None:
            err = SubscribeRefused(refusal.reason, request_id=rid)
            if isinstance(refusal.code, str):
                err.code = refusal.code  # type: ignore[misc]
            raise err
        if name in session.subscriptions:
            self.send(session, messages.subscribed_message(name, rid))
            return None
        self._check_subscription_limit(session, rid)
        return self._join(session, name, rid, verdict if isinstance(verdict, dict) else None)

    def _join(self, session: Session, name: str, rid: messages.RequestId,
              meta: dict[str, Any] | None) -> Any:
        pattern = self.options.presence_channels
        if self.hooks.on_presence is None or pattern is None or not fnmatch.fnmatchcase(
                name, pattern):
            return self._join_now(session, name, rid, meta, None)
        verdict = self._ask_presence(session, name, {"event": "join", "meta": {}})
        return then(verdict, lambda v: self._join_now(session, name, rid, meta, v))

    def _ask_presence(self, session: Session, name: str, change: dict[str, Any]) -> Any:
        """The on_presence verdict; a failing hook vetoes (False), never raises."""
        try:
            result = self.hooks.run("on_presence", session, name, change)
        except ProtocolError:
            return False
        if inspect.isawaitable(result):
            return _veto_on_error(result)
        return result

    def _join_now(self, session: Session, name: str, request_id: messages.RequestId,
                  meta: dict[str, Any] | None, verdict: Any) -> None:
        if session.state is not ConnectionState.OPEN or name in session.subscriptions:
            return
        channel = self.channels.get(name)
        occupied = channel is None
        if channel is None:
            pattern = self.options.presence_channels
            presence = pattern is not None and fnmatch.fnmatchcase(name, pattern)
            channel = self.channels[name] = Channel(name, time.time(), presence)
        if meta:
            channel.metadata.update(meta)
        joined = channel.add(session, visible=refused(verdict) is None)
        if joined and isinstance(verdict, dict):
            channel.metas[session.user] = verdict
        session.subscriptions.add(name)
        if self.bus.active:
            self._emit_join(session, channel, occupied, joined)
        if self.cluster is not None:  # the node answers once the cluster knows
            self.cluster.subscribed(session, channel, request_id)
            return
        reply = messages.subscribed_message(name, request_id)
        if channel.metadata:
            reply["meta"] = channel.metadata
        self.send(session, reply)
        if channel.presence:
            self.send(session, messages.presence_state_message(name, channel.presence_members()))
            if joined:
                diff = messages.presence_diff_message(
                    name, {session.user: channel.member_info(session.user)}, {})
                self._fan_out(channel, text_frame(codec.encode(diff)), exclude=session,
                              priority=Priority.HIGH)

    def _emit_join(self, session: Session, channel: Channel, occupied: bool,
                   joined: bool) -> None:
        now, bus = self.clock(), self.bus
        sid, user, name = session.id, session.user, channel.name
        if occupied:
            bus.emit(ev.ChannelOccupied(at=now, session=sid, user=user, channel=name))
        bus.emit(ev.ChannelSubscribed(at=now, session=sid, user=user, channel=name))
        if joined and channel.presence:
            bus.emit(ev.PresenceJoin(at=now, session=sid, user=user, channel=name,
                                     meta=dict(channel.metas.get(user) or {})))

    def update_presence(self, session: Session, name: str, meta: dict[str, Any]) -> Any:
        """Change ``session``'s user's presence metadata in channel ``name``.

        Runs ``on_presence`` (which may modify or veto); subscribers get a
        ``presence_diff`` with the member's new info. Returns True when applied
        (or an awaitable of it).
        """
        channel = self.channels.get(name)
        if channel is None or session.id not in channel.subscribers:
            raise NotSubscribed(f"not subscribed to {name!r}")
        if not channel.presence or session.id in channel.hidden:
            return False
        verdict: Any = True
        if self.hooks.on_presence is not None:
            verdict = self._ask_presence(session, name, {"event": "update", "meta": meta})
        return then(verdict, lambda v: self._update_presence_now(session, name, meta, v))

    def _update_presence_now(self, session: Session, name: str, meta: dict[str, Any],
                             verdict: Any) -> bool:
        channel = self.channels.get(name)
        if refused(verdict) is not None or channel is None or session.id not in channel.subscribers:
            return False
        user = session.user
        channel.metas[user] = verdict if isinstance(verdict, dict) else dict(meta)
        diff = messages.presence_diff_message(name, {user: channel.member_info(user)}, {})
        self._fan_out(channel, text_frame(codec.encode(diff)), priority=Priority.HIGH)
        if self.bus.active:
            self.bus.emit(ev.PresenceUpdate(at=self.clock(), session=session.id, user=user,
                                            channel=name, meta=dict(channel.metas[user])))
        return True

    def _leave(self, session: Session, name: str, *, timed_out: bool = False) -> None:
        session.subscriptions.discard(name)
        channel = self.channels.get(name)
        if channel is None:
            return
        left = channel.remove(session)
        if self.bus.active:
            now, sid, user = self.clock(), session.id, session.user
            self.bus.emit(ev.ChannelUnsubscribed(at=now, session=sid, user=user, channel=name))
            if left and channel.presence:
                kind = ev.PresenceTimeout if timed_out else ev.PresenceLeave
                self.bus.emit(kind(at=now, session=sid, user=user, channel=name))
            if not channel.subscribers:
                self.bus.emit(ev.ChannelVacated(at=now, session=sid, user=user, channel=name))
        if self.cluster is not None:  # cluster-wide leave events come from the broker
            self.cluster.left(session, channel)
            left = False
        if not channel.subscribers:
            del self.channels[name]
            return
        if channel.presence and left:
            diff = messages.presence_diff_message(name, {}, {session.user: {"connections": 0}})
            self._fan_out(channel, text_frame(codec.encode(diff)), priority=Priority.HIGH)

    def publish(self, channel: str, data: Any, *, sender: str | None = None,
                priority: Priority | str = Priority.NORMAL) -> int:
        """Publish ``data`` to every subscriber of ``channel``; return the recipient count."""
        validate_channel(channel, self.options)
        return self._broadcast(channel, data, sender, priority=Priority.parse(priority))

    def _broadcast(self, name: str, data: Any, sender: str | None,
                   exclude: Session | None = None, priority: Priority = Priority.NORMAL) -> int:
        self.stats.published += 1
        channel = self.channels.get(name)
        cluster = self.cluster  # the other nodes (realtime_lab.broker), usually None
        if channel is None:
            if cluster is not None:
                cluster.published(name, codec.encode(messages.channel_message(name, data, sender)))
            if self.bus.active:
                self.bus.emit(ev.MessagePublished(at=self.clock(), channel=name, user=sender,
                                                  priority=priority.label))
            return 0
        channel.messages += 1
        msg = messages.channel_message(name, data, sender)
        if self._outbound is not None:
            ctx = Outbound(name, msg, priority, sender, len(channel.subscribers), self.clock(),
                           self, exclude)
            return int(self._outbound(ctx) or 0)
        return self._deliver(channel, msg, exclude, priority)

    def _outbound_endpoint(self, ctx: Outbound) -> int:
        channel = self.channels.get(ctx.channel)
        if channel is None:
            return 0
        delivered = self._deliver(channel, ctx.message, ctx.exclude, Priority(ctx.priority))
        ctx.size = self._last_frame_size
        return delivered

    def _deliver(self, channel: Channel, msg: dict[str, Any], exclude: Session | None,
                 priority: Priority) -> int:
        """Encode once, queue the same frame for every subscriber, report it."""
        name = channel.name
        cluster = self.cluster
        probe = self.recorder  # instrumentation probe (realtime_lab.instrument), usually None
        t0 = probe.begin(msg) if probe is not None else 0.0
        text = codec.encode(msg)
        if cluster is not None:  # the same encoded text goes to the other nodes
            cluster.published(name, text)
        frame = text_frame(text)
        self._last_frame_size = len(frame)
        if probe is None:
            delivered = self._fan_out(channel, frame, exclude, priority, message=msg)
        else:
            t1 = probe.clock()
            delivered = self._fan_out(channel, frame, exclude, priority, message=msg)
            probe.end(channel, len(frame), delivered, t0, t1, exclude)
        bus = self.bus
        if bus.active:  # built only for handlers whose type filter can match (bus.wants)
            now, sender, label = self.clock(), msg.get("from"), priority.label
            if bus.wants("message.published"):
                bus.emit(ev.MessagePublished(at=now, channel=name, user=sender,
                                             size=len(frame), priority=label))
            if bus.wants("message.delivered"):
                bus.emit(ev.MessageDelivered(at=now, channel=name, user=sender,
                                             count=delivered, size=len(frame), priority=label))
        return delivered

    def _fan_out(self, channel: Channel, frame: bytes, exclude: Session | None = None,
                 priority: Priority = Priority.NORMAL, *,
                 message: dict[str, Any] | None = None) -> int:
        """Queue the same frame for every subscriber; return how many got it.

        ``frame`` is the JSON text frame. Subscribers with another wire format
        (msgpack, compressed) get the frame of theirs, built once per broadcast.
        """
        delivered = 0
        enqueue = self._enqueue
        variants: FrameVariants | None = None
        for session in list(channel.subscribers.values()):
            if session is exclude:
                continue
            wire = session.wire
            if wire is JSON_WIRE:
                out = frame
            else:
                if variants is None:
                    variants = FrameVariants(frame, message)
                out = variants.get(wire)
            if enqueue(session, out, priority):
                delivered += 1
        self.stats.deliveries += delivered
        return delivered

    # ------------------------------------------------------------------ outbound

    def send(self, session: Session, message: dict[str, Any],
             priority: Priority = Priority.CONTROL) -> bool:
        """Encode and queue one message for one session (replies are control priority)."""
        wire = session.wire
        if wire is JSON_WIRE:
            return self._enqueue(session, text_frame(codec.encode(message)), priority)
        return self._enqueue(session, frame_for(wire, message), priority)

    def _enqueue(self, session: Session, frame: bytes,
                 priority: Priority = Priority.NORMAL) -> bool:
        if session.state is not ConnectionState.OPEN:
            return False
        queue = session.pending
        size = len(frame)
        if (queue.nbytes + session.backlog + size > self.options.max_outbound_bytes
                and not self._make_room(session, size, priority)):
            return False
        queue.push(frame, priority)
        if not session.dirty:
            session.dirty = True
            self._dirty.append(session)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self.flush)
        return True

    def flush(self) -> None:
        """Write every session's pending frames, one write per session."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            self._flush_session(session)

    def _flush_session(self, session: Session, *, force: bool = False) -> None:
        """Write what fits of ``session``'s queue in one write, control first when it
        does not all fit; ``force`` (closing) writes everything."""
        session.dirty = False
        queue = session.pending
        if not queue or session.state is ConnectionState.CLOSED:
            return
        port = session.port
        buffered = port.buffered_bytes()
        session.backlog = buffered
        if force:
            budget = queue.nbytes
        else:
            limit = self.options.max_outbound_bytes
            if buffered + queue.nbytes > limit and not self._make_room(session, 0,
                                                                       Priority.CONTROL):
                return
            budget = min(self.options.write_buffer_bytes, limit) - buffered
            if budget <= 0:
                self._await_drain(session)
                return
        frames = queue.take(budget)
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        session.stats.messages_out += len(frames)
        session.stats.bytes_out += len(data)
        port.write(data)
        session.backlog = port.buffered_bytes()
        if queue and not force:
            self._await_drain(session)

    def _make_room(self, session: Session, size: int, priority: int) -> bool:
        """Drop droppable frames (lowest priority, oldest first) until ``size`` more fit.

        Returns False when the new frame is dropped itself, or when nothing
        droppable is left and the session was closed as a slow consumer.
        """
        queue = session.pending
        limit = self.options.max_outbound_bytes
        droppable = self._droppable
        session.backlog = session.port.buffered_bytes()  # the snapshot may be stale
        while queue.nbytes + session.backlog + size > limit:
            victim = queue.evict(droppable) if droppable >= 0 else None
            if victim is None:
                if priority <= droppable:
                    self._drop(session, priority, size)
                else:
                    self._slow_consumer(session)
                return False
            self._drop(session, victim[1], len(victim[0]))
        return True

    def _drop(self, session: Session, priority: int, size: int, reason: str = "queue_full",
              channel: str | None = None) -> None:
        session.stats.dropped += 1
        self.stats.dropped += 1
        if self.bus.active:
            self.bus.emit(ev.MessageDropped(at=self.clock(), session=session.id, user=session.user,
                                            channel=channel, priority=Priority(priority).label,
                                            size=size, reason=reason))

    def _await_drain(self, session: Session) -> None:
        """Flush again once the transport has written its backlog (ports that can tell
        us; for others the heartbeat tick retries)."""
        if session.awaiting_drain:
            return
        when_drained = getattr(session.port, "when_drained", None)
        if when_drained is None:
            return
        session.awaiting_drain = True
        when_drained(lambda: self._drained(session))

    def _drained(self, session: Session) -> None:
        session.awaiting_drain = False
        if session.state is ConnectionState.OPEN and session.pending:
            self._mark_dirty(session)

    def _mark_dirty(self, session: Session) -> None:
        if not session.dirty:
            session.dirty = True
            self._dirty.append(session)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self.flush)

    def _slow_consumer(self, session: Session) -> None:
        self.stats.slow_consumers += 1
        log.info("closing slow consumer %s (%s)", session.id, session.port.remote)
        session.pending.clear()
        session.pending_bytes = 0
        if self.bus.active:
            self.bus.emit(ev.LimitExceeded(at=self.clock(), session=session.id, user=session.user,
                                           limit="max_outbound_bytes",
                                           code=CloseCode.SLOW_CONSUMER, remote=session.remote))
        self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")

    # ------------------------------------------------------------------ heartbeat

    def heartbeat_tick(self) -> None:
        """Ping connections whose interval is due and close those that did not answer.

        Also: measures event-loop lag and adapts the interval (core/heartbeat.py),
        spreads pings (a per-tick budget), closes idle connections (4105) and
        retries queued frames for ports that cannot report a drained buffer.
        """
        now = self.clock()
        hb = self.heartbeat
        if self._last_tick is not None and self.tick_period > 0:
            hb.observe_lag(now - self._last_tick - self.tick_period)
        self._last_tick = now
        if hb.update(len(self.sessions)):
            self._announce_heartbeat()
        interval = hb.interval
        timeout = hb.timeout
        idle = self.options.idle_timeout
        budget = hb.budget(len(self.sessions), self.tick_period)
        for session in list(self.sessions.values()):
            if session.state is not ConnectionState.OPEN:
                continue
            if session.pending and not session.dirty and not session.awaiting_drain:
                self._mark_dirty(session)
            if idle is not None and now - session.last_activity >= idle:
                self.stats.idle_timeouts += 1
                self.reject(session, IdleTimeout(f"no message for {idle} s"))
                continue
            if session.ping_sent_at is not None:
                if session.last_seen < session.ping_sent_at:
                    if now - session.ping_sent_at >= timeout:
                        self.stats.heartbeat_timeouts += 1
                        if self.bus.active:
                            self.bus.emit(ev.HeartbeatTimeout(at=now, session=session.id,
                                                              user=session.user))
                        self.close(session, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                    continue
                # Traffic since the ping counts as an answer; ping again when due.
                session.ping_sent_at = None
            if budget > 0 and now - session.last_ping_at >= interval * session.ping_factor:
                budget -= 1
                session.ping_sent_at = now
                session.last_ping_at = now
                session.ping_factor = hb.ping_factor()
                session.port.ping()

    def _announce_heartbeat(self) -> None:
        """Tell every client the new interval (one frame, encoded once)."""
        hb = self.heartbeat
        frame = text_frame(codec.encode(messages.heartbeat_message(hb.interval, hb.timeout)))
        for session in list(self.sessions.values()):
            self._enqueue(session, frame, Priority.CONTROL)
        if self.bus.active:
            self.bus.emit(ev.HeartbeatChanged(at=self.clock(), interval=hb.interval,
                                              timeout=hb.timeout))

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


async def _veto_on_error(result: Awaitable[Any]) -> Any:
    try:
        return await result
    except ProtocolError:
        return False


def validate_channel_for(name: str, options: ServerOptions, request_id: messages.RequestId) -> None:
    """Validate a channel name, attaching the request id to the error."""
    try:
        validate_channel(name, options)
    except ProtocolError as err:
        err.request_id = request_id
        raise

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
import dataclasses
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, runtime_checkable

from realtime_lab.core import events as ev
from realtime_lab.core.backplane import Backplane, Cluster, LocalBackplane
from realtime_lab.core.channels import Channel
from realtime_lab.core.dispatch import Dispatch
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.history import HistoryRule, HistoryService
from realtime_lab.core.hooks import ConnectRequest, Hooks, refused
from realtime_lab.core.liveness import Liveness
from realtime_lab.core.membership import Membership
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.outbox import Outbox
from realtime_lab.core.pipeline import compose
from realtime_lab.core.ports import (
    BroadcastProbe,
    Clock,
    ConnectionPort,
    Schedule,
    Scheduler,
    SoonScheduler,
    run_now,
)
from realtime_lab.core.presence import CLOSED, TIMEOUT, Presence
from realtime_lab.core.presence_batch import PresenceBatcher
from realtime_lab.core.presence_sync import PresencePager
from realtime_lab.core.publish import PublishPath
from realtime_lab.core.registry import ChannelRegistry
from realtime_lab.core.requests import LIMIT_OF_ERROR
from realtime_lab.core.security import Admission, verify_token
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import (
    ConnectRefused,
    ProtocolError,
    Unauthorized,
)
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol import messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.protocol.values import check_value
from realtime_lab.protocol.wire import JSON, frame_for

log = logging.getLogger("realtime_lab.core")

#: Seconds between two log records of one kind of failure (``Hub.log_throttle``).
LOG_INTERVAL = 60.0

TIMEOUT_CODES = (CloseCode.HEARTBEAT_TIMEOUT, CloseCode.IDLE_TIMEOUT)


@runtime_checkable
class SetsCompression(Protocol):
    """A middleware that sets the permessage-deflate policy the transport negotiates
    (``realtime_lab.middleware.Compression``)."""

    @property
    def compression_policy(self) -> CompressionPolicy: ...


def compression_of(middleware: Sequence[object], default: CompressionPolicy) -> CompressionPolicy:
    """The first middleware's policy that sets one, else ``default`` (the options')."""
    for mw in middleware:
        if isinstance(mw, SetsCompression):
            return mw.compression_policy
    return default


class Hub(Dispatch, Membership, Presence):
    """Channels, presence and broadcast for a set of connections.

    The hub is split by concern: this module holds admission and lifecycle;
    :mod:`~realtime_lab.core.dispatch` the inbound path;
    :mod:`~realtime_lab.core.membership` channels, presence and broadcast;
    :mod:`~realtime_lab.core.liveness` heartbeat and idle checks,
    :mod:`~realtime_lab.core.registry` the channels, their metadata and rules,
    :mod:`~realtime_lab.core.outbox` the outbound queues and writes,
    :mod:`~realtime_lab.core.history` history and recovery,
    :mod:`~realtime_lab.core.publish` the publish path and
    :mod:`~realtime_lab.core.backplane` how a publication reaches every node: services
    (``hub.services.liveness``, ``.registry``, ``.outbox``, ``.history``,
    ``.publisher``, ``.backplane``).
    """

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        clock: Clock = time.monotonic,
        schedule: Schedule | None = None,
        hooks: Hooks | None = None,
        middleware: Sequence[object] = (),
        bus: EventBus | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        #: Events (docs/events.md); built only when someone listens (``bus.active``).
        self.bus = bus or EventBus()
        self.hooks = hooks or Hooks()
        opts = self.options
        self.admission = Admission(opts.max_connections, opts.max_connections_per_ip)
        self._grace_timer: asyncio.TimerHandle | None = None  # core/presence.py
        self._idle_users: dict[str, set[str]] = {}
        self.clock = clock
        #: Tracebacks input can trigger are logged once per kind and LOG_INTERVAL.
        self.log_throttle = LogThrottle(log, interval=LOG_INTERVAL, clock=clock)
        #: Runs the hub's deferred work (flushes, fan-out slices); see :meth:`bind`.
        self.scheduler: Scheduler = SoonScheduler(schedule or run_now)
        self._schedule: Schedule = self.scheduler.call_soon
        self.sessions: dict[str, Session] = {}
        self.stats = HubStats()
        #: Per-connection queues, one write per turn, fan-outs, slow consumers.
        outbox = Outbox(opts, stats=self.stats, bus=self.bus, clock=clock,
                        log_throttle=self.log_throttle, schedule=self._schedule,
                        close=self.close)
        #: Presence diffs merged per channel over ``presence_batch_window``
        #: (core/presence_batch.py).
        self.presence_batch = PresenceBatcher(opts.presence_batch_window, self._send_diff,
                                              details=opts.presence_details,
                                              max_bytes=opts.page_bytes)

        def send_members(s: Session, msg: dict[str, object], text: str, prio: Priority) -> bool:
            self.presence_batch.synced(str(msg["channel"]))  # a diff due may name who it lists
            return outbox.send(s, msg, prio, text=text)

        #: New subscribers' member lists, sent in pages as they drain (core/presence_sync.py).
        self.presence_pager = outbox.pager = PresencePager(opts, send_members, outbox.await_drain)
        #: The other nodes when this hub is one node of several (``use_backplane``).
        self.cluster: Cluster | None = None
        registry = ChannelRegistry(opts)
        history = HistoryService(opts, clock=clock, send=outbox.send, enqueue=outbox.enqueue)
        backplane = self._local = LocalBackplane(secrets.token_hex(6), history.number)
        publisher = PublishPath(opts, hub=self, backplane=backplane, registry=registry,
                                outbox=outbox, history=history, stats=self.stats,
                                bus=self.bus, clock=clock)
        backplane.attach(publisher)
        self.services = Services(  # the liveness schedule reads the hub's at call time (bind)
            liveness=Liveness(opts, clock=clock, schedule=lambda cb: self._schedule(cb),
                              sessions=self.sessions, stats=self.stats, bus=self.bus,
                              enqueue=outbox.enqueue, mark_dirty=outbox.mark_dirty,
                              close=self.close, reject=self.reject,
                              check_presence_idle=self.check_presence_idle),
            registry=registry,
            outbox=outbox,
            history=history,
            publisher=publisher,
            backplane=backplane,
        )
        self.set_middleware(middleware)

    # ------------------------------------------------------------------ liveness

    def heartbeat_tick(self) -> None:
        """Ping due connections, close those that did not answer (core/liveness.py)."""
        self.services.liveness.tick()

    def pong(self, session: Session) -> None:
        """A pong frame from ``session``: its round trip goes to ``session.rtt``."""
        self.services.liveness.pong(session)

    @property
    def heartbeat(self) -> HeartbeatPolicy:
        """The heartbeat interval policy (core/heartbeat.py)."""
        return self.services.liveness.policy

    @property
    def tick_period(self) -> float:
        """Seconds between heartbeat ticks (set by the server; 0 = unknown, no lag measure)."""
        return self.services.liveness.tick_period

    @tick_period.setter
    def tick_period(self, seconds: float) -> None:
        self.services.liveness.tick_period = seconds

    @property
    def sweeps_sliced(self) -> int:
        """Heartbeat sweeps that took more than one loop turn (tests and benchmarks)."""
        return self.services.liveness.sweeps_sliced

    # ------------------------------------------------------------------ lifecycle

    def bind(self, scheduler: Scheduler) -> None:
        """Run the hub's deferred work on ``scheduler`` (``LabServer.start``: the running
        event loop; the hub is built before any loop runs)."""
        self.scheduler = scheduler
        self._schedule = self.services.outbox.schedule = scheduler.call_soon
        self.presence_batch.bind(scheduler)

    def use_backplane(self, cluster: Cluster | None) -> None:
        """Publish through ``cluster`` (``realtime_lab.broker.BrokerBackplane.start``,
        before the first client), or through this hub's local backplane again (None)."""
        backplane: Backplane = cluster if cluster is not None else self._local
        publisher = self.services.publisher
        backplane.attach(publisher)
        publisher.backplane = backplane
        self.cluster = cluster
        self.services = dataclasses.replace(self.services, backplane=backplane)

    # ------------------------------------------------------------------ publish and history

    def publish(self, channel: str, data: Any, *, sender: str | None = None,
                priority: Priority | str = Priority.NORMAL, event: str | None = None,
                exclude: Session | None = None) -> int:
        """Publish ``data`` to every subscriber of ``channel`` (on every node); return
        this node's recipient count (``PublishPath.publish``).

        ``event``: a name the ``message`` carries (a Pusher client's event name);
        ``exclude``: a connection of this node that does not get it (the Pusher HTTP
        API's ``socket_id``). Raises :class:`~realtime_lab.errors.BadValue` (a
        ``ValueError``) when ``data`` is outside the data model (docs/protocol.md,
        "Values"), before anything is sent.
        """
        self.services.registry.validate(channel)
        check_value(data)
        return self.services.publisher.publish(channel, data, sender, exclude,
                                               priority=Priority.parse(priority), event=event)

    @property
    def recorder(self) -> BroadcastProbe | None:
        """The broadcast observer (``realtime_lab.instrument.Recorder.start()`` sets it)."""
        return self.services.publisher.probe

    @recorder.setter
    def recorder(self, probe: BroadcastProbe | None) -> None:
        self.services.publisher.probe = probe

    def history_rule(self, name: str) -> HistoryRule | None:
        """The first history rule matching channel ``name`` (None: no history)."""
        return self.services.history.rule(name)

    def history(self, name: str) -> list[dict[str, Any]]:
        """The retained messages of channel ``name`` (oldest first)."""
        return self.services.history.messages(name)

    def recover(self, session: Session, name: str, since: dict[str, Any]) -> None:
        """Send ``session`` what it missed in ``name`` since ``since``, then ``recovered``."""
        self.services.history.recover(session, name, since)

    # ------------------------------------------------------------------ outbox

    def send(self, session: Session, message: dict[str, Any],
             priority: Priority = Priority.CONTROL, *, text: str | None = None) -> bool:
        """Encode and queue one message for one session (``Outbox.send``)."""
        return self.services.outbox.send(session, message, priority, text=text)

    def flush(self) -> None:
        """Write every dirty session's pending frames, one write each (``Outbox.flush``)."""
        self.services.outbox.flush()

    @property
    def binary_sessions(self) -> int:
        """Open sessions on another codec than JSON (``Outbox.binary_sessions``)."""
        return self.services.outbox.binary_sessions

    # The hub's parts not yet services (issue 14 steps 7-8) call the outbox through this.

    def _drop(self, session: Session, priority: int, size: int, reason: str = "queue_full",
              channel: str | None = None) -> None:
        self.services.outbox.drop(session, priority, size, reason, channel)

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Install the middleware chain (realtime_lab.middleware), first = outermost."""
        self.middleware = tuple(middleware)
        #: The permessage-deflate policy transports negotiate: a ``Compression``
        #: middleware's, else ``options.compression`` (resolved here, once).
        self.compression = compression_of(self.middleware, self.options.compression)
        self._inbound = compose(self.middleware, self._inbound_endpoint, "inbound")
        self.services.publisher.set_middleware(self.middleware)
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
        session.wire = port.wire  # codec + compression (handshake)
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
                self.log_throttle.log("token_verifier_failed", logging.ERROR,
                                      "token_verifier failed", exc_info=True)
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
            return self._refuse(session, verdict.error(ConnectRefused))
        if isinstance(result, dict):
            user = result.get("user") or user
            session.metadata.update(result.get("metadata") or {})
        if user:
            session.user = str(user)
        session.ping_factor = self.heartbeat.ping_factor()
        self.sessions[session.id] = session
        if session.wire.codec != JSON:
            self.services.outbox.binary_sessions += 1
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
        session.port.write(frame_for(session.wire, messages.error_message(err.code, err.message)))
        session.port.close(code, err.code)
        return session

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close a connection from the server side with ``code``.

        The session leaves its channels and presence now, when the server decides
        (heartbeat or idle timeout, a fatal error, a slow consumer, the application),
        not when the socket finishes closing (up to ``close_timeout`` later for a
        client that does not answer): the others see the leave at once, with its
        reason. :meth:`closed` then has nothing left to leave.
        """
        if self._start_closing(session, code, reason):
            self._detach(session)

    def _start_closing(self, session: Session, code: int, reason: str) -> bool:
        """State CLOSING, what is queued flushed, the close frame sent; False when the
        session was closing already."""
        if session.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return False
        session.state = ConnectionState.CLOSING
        session.close_code = code
        session.close_reason = reason
        self.services.outbox.flush_session(session, force=True)
        session.port.close(code, reason)
        return True

    def _detach(self, session: Session) -> None:
        """Leave every channel of ``session`` (presence leaves with the reason of its close
        code: ``timeout`` for 4101 and 4105, else ``closed``). Idempotent: a session
        that left everything has nothing to leave again."""
        if not session.subscriptions or self.sessions.get(session.id) is not session:
            return
        reason = TIMEOUT if session.close_code in TIMEOUT_CODES else CLOSED
        for name in list(session.subscriptions):
            self._leave(session, name, reason=reason)

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
        self._detach(session)  # usually done already, when the server decided to close
        self.sessions.pop(session.id, None)
        if session.wire.codec != JSON:
            self.services.outbox.binary_sessions -= 1
        self.stats.connections_closed += 1
        for mw in self._closers:
            try:
                mw.connection_closed(session)
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

    def _fire_and_forget(self, name: str, *args: object) -> None:
        try:
            result = self.hooks.run(name, *args)
        except ProtocolError:
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server stopping") -> None:
        """Close every connection with ``code``; then each leaves its channels.

        Every session is CLOSING before the first leave, so no leave diff is queued
        for a connection that is about to close (they would be flushed ahead of its
        close frame)."""
        sessions = [s for s in self.sessions.values() if self._start_closing(s, code, reason)]
        for session in sessions:
            self._detach(session)

    # ------------------------------------------------------------------ views

    @property
    def channels(self) -> dict[str, Channel]:
        """Live channels by name (``hub.services.registry.channels``, the same dict)."""
        return self.services.registry.channels

    def channel_list(self) -> list[dict[str, object]]:
        """Every live channel's counts, sorted by name."""
        return self.services.registry.describe_all()

    def channel_info(self, name: str) -> dict[str, object] | None:
        """Counts and custom metadata of channel ``name``; None when it has no subscribers
        and no metadata was set for it."""
        return self.services.registry.info(name)

    def set_channel_metadata(self, name: str, values: dict[str, object], *,
                             replace: bool = False) -> dict[str, object]:
        """Merge ``values`` into channel ``name``'s custom metadata (or replace it); kept
        while the channel has no subscribers. None removes a key. Returns the new dict."""
        return self.services.registry.set_metadata(name, values, replace=replace)

    def clear_channel_metadata(self, name: str) -> None:
        """Forget the custom metadata of ``name`` (a live channel keeps an empty dict)."""
        self.services.registry.clear_metadata(name)

    def presence(self, channel: str) -> dict[str, dict[str, object]]:
        ch = self.channels.get(channel)
        return ch.presence_members() if ch else {}


@dataclasses.dataclass(frozen=True, slots=True)
class Services:
    """The services the hub is made of (``hub.services``), each with its own state."""

    liveness: Liveness
    registry: ChannelRegistry
    outbox: Outbox
    history: HistoryService
    publisher: PublishPath
    backplane: Backplane


class PendingOpen:
    """What :meth:`Hub.open` returns while an async ``on_connect`` runs: await it."""

    __slots__ = ("_awaitable", "session")

    def __init__(self, session: Session, awaitable: Awaitable[Session]) -> None:
        self.session = session
        self._awaitable = awaitable

    def __await__(self) -> Any:
        return self._awaitable.__await__()

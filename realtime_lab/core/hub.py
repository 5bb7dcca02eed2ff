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

import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from realtime_lab.core.assembly import SetsCompression, build_services, compression_of
from realtime_lab.core.backplane import Backplane, Cluster
from realtime_lab.core.channels import Channel
from realtime_lab.core.commands import Decode
from realtime_lab.core.connections import PendingOpen
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.history import HistoryRule
from realtime_lab.core.hooks import ConnectRequest, Hooks, MaybeAwaitable
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.ports import (
    Clock,
    ConnectionPort,
    Schedule,
    Scheduler,
    SoonScheduler,
    run_now,
)
from realtime_lab.core.presence_modes import PresenceModes
from realtime_lab.core.presence_sync import PresencePager
from realtime_lab.core.publish import BroadcastProbe
from realtime_lab.core.requests import Request
from realtime_lab.core.security import Admission
from realtime_lab.core.services import Services
from realtime_lab.core.session import Session
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import ProtocolError
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.values import check_value

log = logging.getLogger("realtime_lab.core")

#: Seconds between two log records of one kind of failure (``Hub.log_throttle``).
LOG_INTERVAL = 60.0


class Hub:
    """Channels, presence and broadcast for a set of connections: a facade over the
    services ``hub.services`` holds (core/services.py), wired by
    :func:`~realtime_lab.core.assembly.build_services`: ``.connections`` (admission, the
    welcome, closing), ``.commands`` (the inbound path), ``.membership``, ``.presence``,
    ``.liveness``, ``.registry``, ``.outbox``, ``.history``, ``.publisher``, ``.backplane``.
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
        self._hooks = hooks or Hooks()
        self.clock = clock
        #: Tracebacks input can trigger are logged once per kind and LOG_INTERVAL.
        self.log_throttle = LogThrottle(log, interval=LOG_INTERVAL, clock=clock)
        #: Runs the hub's deferred work (flushes, fan-out slices); see :meth:`bind`.
        self.scheduler: Scheduler = SoonScheduler(schedule or run_now)
        self._schedule: Schedule = self.scheduler.call_soon
        self.sessions: dict[str, Session] = {}
        self.stats = HubStats()
        #: The other nodes when this hub is one node of several (``use_backplane``).
        self.cluster: Cluster | None = None
        parts = build_services(self)  # core/assembly.py: the wiring
        self.services: Services = parts.services
        #: Presence diffs merged per channel (core/presence_batch.py; the service's).
        self.presence_batch = parts.services.presence.batch
        #: New subscribers' member lists, sent in pages as they drain (core/presence_sync.py).
        self.presence_pager: PresencePager = parts.presence_pager
        #: Presence modes, the member limit, throttled counts (core/presence_modes.py).
        self.presence_modes: PresenceModes = parts.presence_modes
        self._local = parts.local
        self.set_middleware(middleware)

    @property
    def hooks(self) -> Hooks:
        """The user callbacks (core/hooks.py); replacing them reaches every service."""
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: Hooks) -> None:
        self._hooks = hooks
        services = self.services
        services.commands.hooks = services.connections.hooks = hooks
        services.membership.hooks = services.presence.hooks = hooks

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
        """Run the hub's deferred work on ``scheduler`` (``LabServer.start``: its loop)."""
        self.scheduler = scheduler
        self._schedule = self.services.outbox.schedule = scheduler.call_soon
        self.services.presence.bind(scheduler)
        self.presence_modes.bind(scheduler)

    def use_backplane(self, cluster: Cluster | None) -> None:
        """Publish through ``cluster`` (``BrokerBackplane.start``), or locally again (None)."""
        backplane: Backplane = cluster if cluster is not None else self._local
        publisher = self.services.publisher
        backplane.attach(publisher)
        publisher.backplane = backplane
        self.cluster = self.services.presence.cluster = self.services.membership.cluster = cluster
        self.services = dataclasses.replace(self.services, backplane=backplane)

    # ------------------------------------------------------------------ publish and history

    def publish(self, channel: str, data: Any, *, sender: str | None = None,
                priority: Priority | str = Priority.NORMAL, event: str | None = None,
                exclude: Session | None = None) -> int:
        """Publish ``data`` to ``channel``'s subscribers on every node; this node's count.

        ``event``: the name the ``message`` carries (Pusher's); ``exclude``: a connection
        of this node left out (Pusher's ``socket_id``). :class:`~realtime_lab.errors.BadValue`
        when ``data`` is outside the data model (docs/protocol.md, "Values"), nothing sent.
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

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Install the middleware chain (realtime_lab.middleware), first = outermost."""
        self.middleware = tuple(middleware)
        #: The permessage-deflate policy transports negotiate: a ``Compression``
        #: middleware's, else ``options.compression`` (resolved here, once).
        self.compression = compression_of(self.middleware, self.options.compression)
        services = self.services
        services.commands.set_middleware(self.middleware)
        services.publisher.set_middleware(self.middleware)
        services.connections.set_middleware(self.middleware)

    # ------------------------------------------------------------------ connections

    @property
    def admission(self) -> Admission:
        """The connection limits (``hub.services.connections.admission``)."""
        return self.services.connections.admission

    def open(self, port: ConnectionPort, *, user: str | None = None,
             request: ConnectRequest | None = None) -> Any:
        """Admit a connection, welcome it: its session (CLOSING when refused) or a
        :class:`PendingOpen` with an async ``on_connect`` (``Connections.open``)."""
        return self.services.connections.open(port, user=user, request=request)

    def refused_handshake(self, remote: str, code: int, reason: str, limit: str) -> None:
        """The transport refused a handshake (e.g. HTTP 403 for an origin): count, emit."""
        self.services.connections.refused_handshake(remote, code, reason, limit)

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close ``session`` with ``code``; it leaves its channels now (``Connections.close``)."""
        self.services.connections.close(session, code, reason)

    def closed(self, session: Session, code: int | None = None, reason: str = "") -> None:
        """The transport reports the socket closed: drop subscriptions and presence."""
        self.services.connections.closed(session, code, reason)

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server stopping") -> None:
        """Close every connection with ``code``; then each leaves its channels."""
        self.services.connections.close_all(code, reason)

    # ------------------------------------------------------------------ inbound commands

    def receive_text(self, session: Session, text: str | bytes, *,
                     decode: Decode = codec.decode) -> Awaitable[None] | None:
        """One inbound text message (``Commands.receive_text``); an awaitable while async
        middleware or a hook works (the transport awaits it before the next message)."""
        return self.services.commands.receive_text(session, text, decode=decode)

    def receive_binary(self, session: Session, data: bytes) -> Awaitable[None] | None:
        """A MessagePack message on the msgpack protocol; on JSON, an error."""
        return self.services.commands.receive_binary(session, data)

    def reject(self, session: Session, err: ProtocolError) -> None:
        """Answer a bad request with an ``error``; close if fatal (``Commands.reject``)."""
        self.services.commands.reject(session, err)

    # ------------------------------------------------------------------ channels

    def subscribe(self, session: Session, name: str, request_id: messages.RequestId = None,
                  auth: str | None = None) -> MaybeAwaitable[None]:
        """Subscribe as a ``subscribe`` message would (``MembershipService.subscribe``); a
        refusal raises its :class:`~realtime_lab.errors.ProtocolError`."""
        return self.services.membership.subscribe(session, name, request_id, auth)

    @property
    def channels(self) -> dict[str, Channel]:
        """Live channels by name (``hub.services.registry.channels``, the same dict)."""
        return self.services.registry.channels

    def channel_list(self) -> list[dict[str, object]]:
        """Every live channel's counts (cluster-wide with a broker), sorted by name."""
        presence = self.services.presence
        return [presence.with_counts(desc) for desc in self.services.registry.describe_all()]

    def channel_info(self, name: str) -> dict[str, object] | None:
        """Counts (cluster-wide) and metadata of ``name``; None: no subscribers, no metadata."""
        info = self.services.registry.info(name)
        return info if info is None else self.services.presence.with_counts(info)

    def set_channel_metadata(self, name: str, values: dict[str, object], *,
                             replace: bool = False) -> dict[str, object]:
        """Merge (or replace) ``name``'s custom metadata; None removes a key. The new dict."""
        return self.services.registry.set_metadata(name, values, replace=replace)

    def clear_channel_metadata(self, name: str) -> None:
        """Forget the custom metadata of ``name`` (a live channel keeps an empty dict)."""
        self.services.registry.clear_metadata(name)

    # ------------------------------------------------------------------ presence

    def presence(self, channel: str) -> dict[str, dict[str, object]]:
        """The members of ``channel`` and their info (cluster-wide with a broker)."""
        return self.services.presence.members(channel)

    def presence_message(self, request: Request,
                         msg: messages.SetPresence) -> MaybeAwaitable[None]:
        """A client's ``presence`` message (``PresenceService.presence_message``)."""
        return self.services.presence.presence_message(request, msg)

    def request_presence(self, session: Session, name: str, *, state: str | None = None,
                         meta: dict[str, object] | None = None
                         ) -> MaybeAwaitable[list[str] | None]:
        """A change ``session`` asks for, through ``on_presence`` (``PresenceService``)."""
        return self.services.presence.request_presence(session, name, state=state, meta=meta)

    def update_presence(self, session: Session, name: str,
                        meta: dict[str, object] | None = None, *,
                        state: str | None = None) -> MaybeAwaitable[bool]:
        """Server side, on behalf of ``session``, through ``on_presence``: True when applied."""
        return self.services.presence.update_presence(session, name, meta, state=state)

    def set_presence(self, session: Session, name: str, *, state: str | None = None,
                     meta: dict[str, object] | None = None) -> list[str]:
        """Server side: change ``session``'s member in ``name``; no hook. What changed."""
        return self.services.presence.set_presence(session, name, state=state, meta=meta)

    def set_member(self, name: str, user: str, *, state: str | None = None,
                   meta: dict[str, object] | None = None, session: str | None = None
                   ) -> list[str]:
        """Server side: change member ``user``'s state and/or metadata; no hook."""
        return self.services.presence.set_member(name, user, state=state, meta=meta,
                                                 session=session)

    def kick(self, name: str, user: str, reason: str = "kicked") -> int:
        """Unsubscribe ``user`` from ``name`` on every node; how many of this server's."""
        return self.services.presence.kick(name, user, reason)

    def announce_presence(self, name: str, diff: dict[str, object],
                          exclude: Session | None = None) -> None:
        """The one way a ``presence_diff`` reaches ``name``'s local subscribers."""
        self.services.presence.announce(name, diff, exclude)

    def expire_presence(self, now: float | None = None) -> float | None:
        """End the grace periods that are due; the next deadline (tests call it)."""
        return self.services.presence.expire_presence(now)

    def check_presence_idle(self, now: float | None = None) -> int:
        """Move members idle for ``presence_idle_timeout`` to the idle state."""
        return self.services.presence.check_presence_idle(now)


__all__ = ["Hub", "PendingOpen", "Services", "SetsCompression", "compression_of"]

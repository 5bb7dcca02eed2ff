"""Liveness: heartbeat pings and timeouts, idle timeouts, adaptive interval announcements.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.
"""


from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from realtime_lab.core import events as ev
from realtime_lab.core.channels import Channel
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.hooks import Hooks
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import Outbound
from realtime_lab.core.ports import (
    BroadcastProbe,
    Clock,
    ClusterPort,
    Scheduler,
)
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import (
    IdleTimeout,
    ProtocolError,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame

log = logging.getLogger("realtime_lab.core")


class Liveness:
    """Heartbeat and idle checks, run by the server every tick (part of Hub)."""

    # State and methods shared across the hub's parts (defined in Hub.__init__ and hub.py).
    options: ServerOptions
    bus: EventBus
    hooks: Hooks
    stats: HubStats
    clock: Clock
    sessions: dict[str, Session]
    channels: dict[str, Channel]
    cluster: ClusterPort | None
    recorder: BroadcastProbe | None
    heartbeat: HeartbeatPolicy
    tick_period: float
    _last_tick: float | None
    _last_frame_size: int
    _droppable: int
    _publish_re: re.Pattern[str] | None
    _schedule: Scheduler
    _dirty: list[Session]
    _flush_scheduled: bool
    _outbound: Callable[[Outbound], Any] | None

    if TYPE_CHECKING:
        def close(self, session: Session, code: int, reason: str) -> None: ...
        def reject(self, session: Session, err: ProtocolError) -> None: ...
        def send(self, session: Session, message: dict[str, Any],
                 priority: Priority = Priority.CONTROL) -> bool: ...
        def _enqueue(self, session: Session, frame: bytes,
                     priority: Priority = Priority.NORMAL) -> bool: ...
        def _mark_dirty(self, session: Session) -> None: ...
        def _fan_out(self, channel: Channel, frame: bytes, exclude: Session | None = None,
                     priority: Priority = Priority.NORMAL, *,
                     message: dict[str, Any] | None = None) -> int: ...


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

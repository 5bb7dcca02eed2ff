"""Liveness: heartbeat pings and timeouts, idle timeouts, adaptive interval announcements.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.
"""


from __future__ import annotations

import logging

from realtime_lab.core import events as ev
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import ConnectionState
from realtime_lab.errors import (
    IdleTimeout,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame

log = logging.getLogger("realtime_lab.core")


class Liveness(HubBase):
    """Heartbeat and idle checks, run by the server every tick (part of Hub)."""

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
        if self.options.presence_idle_timeout is not None:
            self.check_presence_idle(now)  # core/presence.py
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

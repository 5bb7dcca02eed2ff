"""Liveness: heartbeat pings and timeouts, idle timeouts, adaptive interval announcements.

A service of :class:`realtime_lab.core.hub.Hub` (``hub.services.liveness``) with its
own state; it gets what it calls (the outbox's ``enqueue`` and ``mark_dirty``, the
hub's ``close`` and ``reject``, presence's idle check, a scheduler) as constructor
arguments and never imports the hub. The hub keeps the public names as one-line
delegations: ``heartbeat_tick``, ``pong``, ``tick_period``, ``sweeps_sliced``,
``heartbeat``.

A tick's walk over the sessions (a *sweep*) is time-sliced like the fan-out
(core/outbox.py): up to ``fanout_slice_min`` sessions are checked in the tick
itself; a bigger server is checked for about ``fanout_slice_seconds`` per loop
turn and the sweep continues in the next turn, so 10,000 connections do not
hold the loop for one long call. A tick that finds the previous sweep still
running leaves it alone (the sessions it has not reached yet are checked by
it); the ping budget belongs to the sweep, not to a slice. A slice also ends
after ``PINGS_PER_SLICE`` pings, so the pongs come back spread over turns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter

from realtime_lab.core import events as ev
from realtime_lab.core.events import EventBus
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.ports import Clock, Schedule
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import IdleTimeout, ProtocolError
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame

log = logging.getLogger("realtime_lab.core")

#: What the service calls (given by the hub): close a session with a code and reason;
#: answer a session with an error (closing on a fatal one); queue one frame for a
#: session; mark a session's queue for the next flush; presence's idle check.
Close = Callable[[Session, int, str], None]
Reject = Callable[[Session, ProtocolError], None]
Enqueue = Callable[[Session, bytes, Priority], object]
MarkDirty = Callable[[Session], None]
CheckIdle = Callable[[float], int]

SWEEP_STEP = 32  # sessions checked between two looks at the slice deadline
# Pings one slice of a sliced sweep may send. Each ping brings back a pong that
# the loop reads in one of the next turns (every ready socket in one turn), so
# sending 2,000 in one 5 ms slice would make a 30-40 ms turn of pong reads.
PINGS_PER_SLICE = 128


@dataclass(slots=True)
class Sweep:
    """One tick's walk over the sessions: where it is and the pings it may still send."""

    sessions: list[Session]
    budget: int
    index: int = 0
    turns: int = 1
    slice_pings: int | None = None  # pings left in this slice; None: no cap (unsliced)


class Liveness:
    """Heartbeat and idle checks, run by the server every tick (``hub.services.liveness``)."""

    def __init__(self, options: ServerOptions, *, clock: Clock, schedule: Schedule,
                 sessions: Mapping[str, Session], stats: HubStats, bus: EventBus,
                 enqueue: Enqueue, mark_dirty: MarkDirty, close: Close, reject: Reject,
                 check_presence_idle: CheckIdle, policy: HeartbeatPolicy | None = None) -> None:
        self.options = options
        self.clock = clock
        self.schedule = schedule
        self.sessions = sessions  # the hub's dict of open sessions (read only)
        self.stats = stats
        self.bus = bus
        self.enqueue = enqueue
        self.mark_dirty = mark_dirty
        self.close = close
        self.reject = reject
        self.check_presence_idle = check_presence_idle
        #: The interval policy (adaptive interval, lag, ping budget): ``hub.heartbeat``;
        #: ``policy``: one the connections already read (the welcome's intervals).
        self.policy = policy or HeartbeatPolicy(options)
        #: Seconds between heartbeat ticks (set by the server; 0 = unknown, no lag measure).
        self.tick_period = 0.0
        #: The sweep under way, None between sweeps.
        self.sweep: Sweep | None = None
        #: Sweeps that took more than one loop turn (for tests and benchmarks).
        self.sweeps_sliced = 0
        self._last_tick: float | None = None
        self._busy = False  # a slice is running (a scheduler that runs callbacks at once)
        self._again = False  # the scheduler ran the next slice inside this one

    def tick(self) -> None:
        """Ping connections whose interval is due and close those that did not answer.

        Also: measures event-loop lag and adapts the interval (core/heartbeat.py),
        spreads pings (a per-tick budget), closes idle connections (4105) and
        retries queued frames for ports that cannot report a drained buffer.
        The walk over the sessions is sliced over loop turns on a big server.
        """
        now = self.clock()
        hb = self.policy
        if self._last_tick is not None and self.tick_period > 0:
            hb.observe_lag(now - self._last_tick - self.tick_period)
        self._last_tick = now
        if hb.update(len(self.sessions)):
            self._announce()
        if self.options.presence_idle_timeout is not None:
            self.check_presence_idle(now)  # core/presence.py
        if self.sweep is not None:
            return  # the previous sweep is still going; it reaches everyone
        sessions = list(self.sessions.values())
        self.sweep = Sweep(sessions, hb.budget(len(sessions), self.tick_period))
        self._run_sweep()

    def pong(self, session: Session) -> None:
        """A pong from ``session``: record the round trip (``session.rtt``) and the sight."""
        now = self.clock()
        if session.ping_sent_at is not None:
            session.rtt = now - session.ping_sent_at
            session.ping_sent_at = None
        session.last_seen = now

    def _run_sweep(self) -> None:
        """Check sessions of the current sweep for one slice; schedule the rest."""
        sweep = self.sweep
        if self._busy or sweep is None:  # a scheduler that runs callbacks at once
            self._again = True
            return
        self._busy = True
        try:
            sessions = sweep.sessions
            if sweep.index == 0 and len(sessions) <= self.options.fanout_slice_min:
                self._check_sessions(sweep, len(sessions))  # a small server: unsliced
                self.sweep = None
                return
            slice_seconds = self.options.fanout_slice_seconds
            deadline = perf_counter() + slice_seconds
            sweep.slice_pings = PINGS_PER_SLICE
            while sweep.index < len(sessions):
                self._check_sessions(sweep, sweep.index + SWEEP_STEP)
                if sweep.index < len(sessions) and (
                        not sweep.slice_pings or perf_counter() >= deadline):
                    self._again = False
                    self.schedule(self._run_sweep)
                    if not self._again:
                        sweep.turns += 1
                        if sweep.turns == 2:
                            self.sweeps_sliced += 1
                        return  # the rest runs in a later turn
                    deadline = perf_counter() + slice_seconds
                    sweep.slice_pings = PINGS_PER_SLICE
            self.sweep = None
        finally:
            self._busy = False

    def _check_sessions(self, sweep: Sweep, stop: int) -> None:
        """Idle, timeout and ping checks for ``sweep.sessions[sweep.index:stop]``.

        Stops early, after the session it pinged, when the slice's pings are used up.
        """
        now = self.clock()
        hb = self.policy
        interval = hb.interval
        timeout = hb.timeout
        idle = self.options.idle_timeout
        sessions = sweep.sessions
        stop = min(stop, len(sessions))
        start, sweep.index = sweep.index, stop
        for i in range(start, stop):
            session = sessions[i]
            if session.state is not ConnectionState.OPEN:
                continue
            if session.pending and not session.dirty and not session.awaiting_drain:
                self.mark_dirty(session)
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
            if sweep.budget > 0 and now - session.last_ping_at >= interval * session.ping_factor:
                sweep.budget -= 1
                session.ping_sent_at = now
                session.last_ping_at = now
                session.ping_factor = hb.ping_factor()
                session.port.ping()
                if sweep.slice_pings is not None:
                    sweep.slice_pings -= 1
                    if not sweep.slice_pings:
                        sweep.index = i + 1  # this slice's pings are used up
                        return

    def _announce(self) -> None:
        """Tell every client the new interval (one frame, encoded once)."""
        hb = self.policy
        frame = text_frame(codec.encode(messages.heartbeat_message(hb.interval, hb.timeout)))
        for session in list(self.sessions.values()):
            self.enqueue(session, frame, Priority.CONTROL)
        if self.bus.active:
            self.bus.emit(ev.HeartbeatChanged(at=self.clock(), interval=hb.interval,
                                              timeout=hb.timeout))

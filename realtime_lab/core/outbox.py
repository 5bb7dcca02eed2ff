"""The outbox: per-connection queues, one write per connection per loop turn,
priorities under pressure, time-sliced fan-outs and the slow-consumer policy.

:class:`Outbox` is a service of :class:`realtime_lab.core.hub.Hub` with its own state;
the hub builds it and wires in what it calls back (``close`` for a slow consumer, the
presence pager). ``Hub.send`` and ``Hub.flush`` delegate to it.

A broadcast is all or nothing and can never stop the ones after it: its frame is
encoded for every codec its targets use before anyone gets it (a value a codec
cannot carry fails there, and nobody gets it), and a fan-out job that raises all
the same is dropped, logged at most once per minute (``log_throttle``), and the
jobs queued behind it run (issue 13: one publish wedged the sliced fan-out queue,
and with it every later broadcast of the server).

The paced path (one message per turn, issue 14) is the one most deliveries take:
``fan_out`` appends the shared frame to each queue inline, and ``flush_session``
writes a queue of normal-priority frames that fits the write budget, with no
backlog left from the last write, in one ``port.write`` whose return value (the
transport's backlog) is kept for the next turn: no ``buffered_bytes()`` call, no
``OutboundQueue.take``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from time import perf_counter
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.events import EventBus
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.ports import Clock, Schedule
from realtime_lab.core.presence_sync import PresencePager
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol import codec
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, MSGPACK, FrameVariants, frame_for

log = logging.getLogger("realtime_lab.core")

#: Sessions (flush) or subscribers (fan-out) handled between two looks at the clock.
SLICE_STEP = 32
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED
_NORMAL = Priority.NORMAL

#: ``close(session, code, reason)``: how the outbox closes a slow consumer.
Closer = Callable[[Session, int, str], None]


class FanOut:
    """What is left of one broadcast: the same frame for ``targets[index:]``.

    ``skip``: ids of sessions not to serve (filtered out when the job is made).
    """

    __slots__ = ("delivered", "failed", "frame", "index", "message", "priority", "skip",
                 "targets", "variants")

    def __init__(self, targets: Sequence[Session], frame: bytes, priority: Priority,
                 message: dict[str, Any] | None, skip: Collection[str] = ()) -> None:
        self.targets = [s for s in targets if s.id not in skip] if skip else targets
        self.skip = skip
        self.index = 0
        self.delivered = 0
        self.frame = frame
        self.priority = priority
        self.message = message
        self.variants: FrameVariants | None = None
        self.failed = False

    def prepare(self) -> None:
        """Encode the broadcast now for every codec its targets use (JSON is done), so
        that a value a codec cannot carry fails before anyone gets anything."""
        for session in self.targets:
            wire = session.wire
            if wire is not JSON_WIRE and wire.codec == MSGPACK:  # the codec that may refuse
                self.frame_for(session)  # (a frame codec translates what JSON carried)
                return

    def frame_for(self, session: Session) -> bytes:
        """This broadcast's frame in ``session``'s wire format (each built once)."""
        if session.wire is JSON_WIRE:
            return self.frame
        if self.variants is None:
            self.variants = FrameVariants(self.frame, self.message)
        return self.variants.for_recipient(session.wire, session.user)


class Outbox:
    """Queues frames per connection and writes them once per turn."""

    def __init__(self, options: ServerOptions, *, stats: HubStats, bus: EventBus, clock: Clock,
                 log_throttle: LogThrottle, schedule: Schedule, close: Closer,
                 pager: PresencePager | None = None) -> None:
        self.options = options
        self.stats = stats
        self.bus = bus
        self.clock = clock
        self.log_throttle = log_throttle
        self.schedule = schedule  # loop.call_soon-like; Hub.bind replaces it
        self.close = close
        #: New subscribers' member lists in pages (core/presence_sync.py), set by the hub.
        self.pager = pager
        dp = options.droppable_priority
        self.droppable = -1 if dp == "none" else int(Priority.parse(dp))
        #: What one write may add to a connection with nothing buffered.
        self.write_room = min(options.write_buffer_bytes, options.max_outbound_bytes)
        #: Open sessions on another codec than JSON (MessagePack): while there are none, a
        #: broadcast has no other encoding to prepare.
        self.binary_sessions = 0
        self._dirty: list[Session] = []
        self._flush_scheduled = False
        self._jobs: deque[FanOut] = deque()
        self._busy = False  # a fan-out slice is running
        self._again = False  # the scheduler ran a callback at once during a slice
        self._urgent: list[Session] | None = None  # control frames during a sliced flush
        self._deferred_at: float | None = None  # first flush put off behind a sliced fan-out
        self._partial = False  # a sliced flush has sessions left for the next turn
        self._turn_deadline: float | None = None  # end of this turn's time for large fan-outs

    @property
    def pending_fan_outs(self) -> int:
        """Broadcasts still being fanned out (sliced over loop turns)."""
        return len(self._jobs)

    # ------------------------------------------------------------------ queueing

    def send(self, session: Session, message: dict[str, Any],
             priority: Priority = Priority.CONTROL, *, text: str | None = None) -> bool:
        """Encode and queue one message for one session (replies are control priority).

        ``text``: the message already encoded as JSON, used on a JSON connection.
        """
        wire = session.wire
        if wire is JSON_WIRE:
            return self.enqueue(session, text_frame(
                codec.encode(message) if text is None else text), priority)
        return self.enqueue(session, frame_for(wire, message), priority)

    def enqueue(self, session: Session, frame: bytes,
                priority: Priority = Priority.NORMAL) -> bool:
        """Queue one built frame for ``session``; False when it is not queued (closed,
        dropped, or the session closed as a slow consumer)."""
        if session.state is not _OPEN:
            return False
        queue = session.pending
        size = len(frame)
        if (queue.nbytes + session.backlog + size > self.options.max_outbound_bytes
                and not self.make_room(session, size, priority)):
            return False
        queue.push(frame, priority)
        self.mark_dirty(session)
        if priority == Priority.CONTROL and (len(self._dirty) > self.options.fanout_slice_min
                                             or self._jobs):
            if self._urgent is None:  # a sliced flush is under way: this one goes first
                self._urgent = []
            self._urgent.append(session)
        return True

    def mark_dirty(self, session: Session) -> None:
        """Write ``session``'s queue in this turn's flush."""
        if not session.dirty:
            session.dirty = True
            self._dirty.append(session)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.schedule(self.flush)

    # ------------------------------------------------------------------ fan-out

    def fan_out(self, targets: Sequence[Session], frame: bytes, priority: Priority,
                message: dict[str, Any] | None = None, *, skip: Collection[str] = ()) -> int:
        """Queue ``frame`` for every session of ``targets`` but those whose id is in
        ``skip``; return how many got it.

        Up to ``fanout_slice_min`` targets are done at once. A larger fan-out is
        done in slices of about ``fanout_slice_seconds`` per loop turn, the rest
        in later turns; while one is unfinished, later broadcasts queue behind
        it, so every connection still gets the broadcasts in publish order. The
        count then includes the targets still to come.
        """
        job = FanOut(targets, frame, priority, message, skip)
        targets = job.targets
        if self.binary_sessions:  # a JSON-only server has nothing else to encode
            try:
                job.prepare()
            except Exception:
                self._fan_out_failed(job, "could not be encoded")
                return 0
        jobs = self._jobs
        if not jobs and len(targets) <= self.options.fanout_slice_min:
            self._enqueue_many(job, len(targets))
            return job.delivered
        jobs.append(job)
        if len(jobs) == 1:
            self._run_fan_outs()
        return job.delivered if job.failed else job.delivered + len(targets) - job.index

    def _fan_out_failed(self, job: FanOut, what: str) -> None:
        job.failed = True
        self.stats.fanouts_failed += 1
        self.log_throttle.log(
            "fanout_failed", logging.ERROR,
            "a broadcast to %d subscribers %s after %d deliveries and was dropped; later "
            "broadcasts go on", len(job.targets), what, job.delivered, exc_info=True)

    def _run_fan_outs(self) -> None:
        """Work through the queued fan-outs for one slice; schedule the rest."""
        jobs = self._jobs
        if self._busy or not jobs:  # a scheduler that runs callbacks at once
            self._again = True
            return
        deadline = self._deadline()
        if deadline is None:  # this turn's fan-out time is spent: go on in the next one
            self.schedule(self._run_fan_outs)
            return
        self._busy = True
        try:
            while jobs:
                job = jobs[0]
                targets = job.targets
                while job.index < len(targets):
                    self._enqueue_many(job, job.index + SLICE_STEP)
                    if perf_counter() >= deadline:
                        self._flush_if_waited_enough()
                        self._again = False
                        self.schedule(self._run_fan_outs)
                        if not self._again:
                            return  # the rest runs in a later turn
                        deadline = perf_counter() + self.options.fanout_slice_seconds
                jobs.popleft()
            self._flush_if_waited_enough(done=True)
        finally:
            self._busy = False

    def _deadline(self) -> float | None:
        """When this loop turn's fan-out time ends (``fanout_slice_seconds`` for all
        the large broadcasts of the turn together); None once it has passed."""
        deadline = self._turn_deadline
        if deadline is None:
            deadline = self._turn_deadline = perf_counter() + self.options.fanout_slice_seconds
            self.schedule(self._end_fanout_turn)
            return deadline  # at least one step, even with no time at all
        return deadline if perf_counter() < deadline else None

    def _end_fanout_turn(self) -> None:
        self._turn_deadline = None

    def _flush_if_waited_enough(self, *, done: bool = False) -> None:
        """Schedule the flush put off behind the fan-outs once they are ``done`` or
        it has waited ``fanout_flush_delay``."""
        since = self._deferred_at
        if since is None or self._flush_scheduled:
            return
        if done or perf_counter() - since >= self.options.fanout_flush_delay:
            self._flush_scheduled = True
            self.schedule(self.flush)

    def _enqueue_many(self, job: FanOut, stop: int) -> None:
        """Queue ``job``'s frame for ``job.targets[job.index:stop]``; advance the index.

        A job that raises is dropped (``job.failed``, nothing more of it is sent) and
        logged; what was queued before counts. The common case (JSON connection,
        normal priority, room in the queue) is inlined: two list operations and an
        add per subscriber, no call.
        """
        targets = job.targets
        start = job.index
        stop = min(stop, len(targets))
        job.index = stop
        frame = job.frame
        size = len(frame)
        priority = job.priority
        room = self.options.max_outbound_bytes - size
        simple = priority == _NORMAL
        enqueue = self.enqueue
        dirty = self._dirty
        delivered = 0
        try:
            for i in range(start, stop):
                session = targets[i]
                queue = session.pending
                if (simple and session.wire is JSON_WIRE and queue.prios is None
                        and session.state is _OPEN and queue.nbytes + session.backlog <= room):
                    queue.frames.append(frame)
                    queue.nbytes += size
                    delivered += 1
                    if not session.dirty:
                        session.dirty = True
                        dirty.append(session)
                        if not self._flush_scheduled:
                            self._flush_scheduled = True
                            self.schedule(self.flush)
                elif enqueue(session, job.frame_for(session), priority):
                    delivered += 1
        except Exception:
            job.index = len(targets)
            failed = True
        else:
            failed = False
        job.delivered += delivered
        self.stats.deliveries += delivered
        if failed:
            self._fan_out_failed(job, "failed")

    # ------------------------------------------------------------------ flush

    def flush(self) -> None:
        """Write every dirty session's pending frames, one write per session.

        Up to ``fanout_slice_min`` sessions are written in this turn whatever it
        takes; more are written for about ``fanout_slice_seconds``, then the rest
        waits for the next loop turn (sessions with a control frame first), so
        a broadcast to a huge group does not stall the loop.

        While sliced fan-outs are still being queued, the writes wait for them
        to finish, at most ``fanout_flush_delay``, so that each connection gets
        many frames in one write (a burst to 5000 subscribers then costs per
        delivery what one to 1000 does); sessions with a control frame are
        written at once.
        """
        self._flush_scheduled = False
        urgent = self._urgent
        if urgent:
            self._urgent = None
            self._write_dirty(urgent)
        if self._jobs and not self._partial and self._put_off_flush():
            return
        self._deferred_at = None
        self._partial = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        count = len(dirty)
        if count <= self.options.fanout_slice_min:
            self._write_dirty(dirty)
            return
        deadline = perf_counter() + self.options.fanout_slice_seconds
        done = 0
        while done < count:
            self._write_dirty(dirty[done:done + SLICE_STEP])
            done += SLICE_STEP
            if done < count and perf_counter() >= deadline:
                rest = dirty[done:]
                rest += self._dirty
                self._dirty = rest
                self._partial = True
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.schedule(self.flush)
                return

    def _put_off_flush(self) -> bool:
        """True while the first put-off flush is younger than ``fanout_flush_delay``
        (the fan-out's last slice or that deadline schedules the flush again)."""
        now = perf_counter()
        since = self._deferred_at
        if since is None:
            self._deferred_at = since = now
        return now - since < self.options.fanout_flush_delay

    def _write_dirty(self, sessions: list[Session]) -> None:
        """:meth:`flush_session` for each session of ``sessions`` still dirty, with the
        paced path inlined: normal frames only, all within the write budget, nothing
        left from the last write (``session.backlog``, as ``port.write`` reported it).
        """
        room = self.write_room
        flush_session = self.flush_session
        pager = self.pager
        for session in sessions:
            if not session.dirty:
                continue
            queue = session.pending
            frames = queue.frames
            if (session.backlog or queue.prios is not None or queue.nbytes > room
                    or not frames or session.state is _CLOSED):
                flush_session(session)
                continue
            session.dirty = False
            queue.frames = []
            queue.nbytes = 0
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            stats = session.stats
            stats.messages_out += len(frames)
            stats.bytes_out += len(data)
            port = session.port
            backlog = port.write(data)
            # a port written before write() reported the backlog returns None
            session.backlog = port.buffered_bytes() if backlog is None else backlog
            if pager is not None and pager.active:  # a member list in pages (presence_sync)
                pager.pump(session)

    def flush_session(self, session: Session, *, force: bool = False) -> None:
        """Write what fits of ``session``'s queue in one write, control first when it
        does not all fit; ``force`` (closing) writes everything."""
        session.dirty = False
        queue = session.pending
        if not queue or session.state is _CLOSED:
            return
        port = session.port
        buffered = port.buffered_bytes()
        session.backlog = buffered
        if force:
            budget = queue.nbytes
        else:
            limit = self.options.max_outbound_bytes
            if buffered + queue.nbytes > limit and not self.make_room(session, 0,
                                                                      Priority.CONTROL):
                return
            budget = min(self.options.write_buffer_bytes, limit) - buffered
            if budget <= 0:
                self.await_drain(session)
                return
        taken = queue.take(budget)
        data = taken[0] if len(taken) == 1 else b"".join(taken)
        session.stats.messages_out += len(taken)
        session.stats.bytes_out += len(data)
        backlog = port.write(data)
        session.backlog = port.buffered_bytes() if backlog is None else backlog
        pager = self.pager
        if queue and not force:
            self.await_drain(session)
        elif pager is not None and pager.active and not force:
            pager.pump(session)

    # ------------------------------------------------------------------ pressure

    def make_room(self, session: Session, size: int, priority: int) -> bool:
        """Drop droppable frames (lowest priority, oldest first) until ``size`` more fit.

        Returns False when the new frame is dropped itself, or when nothing
        droppable is left and the session was closed as a slow consumer.
        """
        queue = session.pending
        limit = self.options.max_outbound_bytes
        droppable = self.droppable
        session.backlog = session.port.buffered_bytes()  # the snapshot may be stale
        while queue.nbytes + session.backlog + size > limit:
            victim = queue.evict(droppable) if droppable >= 0 else None
            if victim is None:
                if priority <= droppable:
                    self.drop(session, priority, size)
                else:
                    self._slow_consumer(session)
                return False
            self.drop(session, victim[1], len(victim[0]))
        return True

    def drop(self, session: Session, priority: int, size: int, reason: str = "queue_full",
             channel: str | None = None) -> None:
        """Count a message not delivered to ``session`` and emit ``message.dropped``."""
        session.stats.dropped += 1
        self.stats.dropped += 1
        if reason == "hook":
            self.stats.dropped_by_hook += 1
        elif reason == "middleware":
            self.stats.dropped_by_middleware += 1
        if self.bus.active:
            self.bus.emit(ev.MessageDropped(at=self.clock(), session=session.id, user=session.user,
                                            channel=channel, priority=Priority(priority).label,
                                            size=size, reason=reason))

    def await_drain(self, session: Session) -> None:
        """Flush again once the transport has written its backlog."""
        if session.awaiting_drain:
            return
        session.awaiting_drain = True
        session.port.when_drained(lambda: self._drained(session))

    def _drained(self, session: Session) -> None:
        session.awaiting_drain = False
        session.backlog = 0
        if session.state is _OPEN and session.pending:
            self.mark_dirty(session)
        elif self.pager is not None and self.pager.active:
            self.pager.pump(session)

    def _slow_consumer(self, session: Session) -> None:
        self.stats.slow_consumers += 1
        log.info("closing slow consumer %s (%s)", session.id, session.port.remote)
        session.pending.clear()
        session.pending_bytes = 0
        session.port.discard_unsent()  # the close frame goes right after what the OS has
        if self.bus.active:
            self.bus.emit(ev.LimitExceeded(at=self.clock(), session=session.id, user=session.user,
                                           limit="max_outbound_bytes",
                                           code=CloseCode.SLOW_CONSUMER, remote=session.remote))
        self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")

"""The outbound path: per-connection queues, one write per connection per loop turn,
priorities under pressure, and the slow-consumer policy.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.

A broadcast is all or nothing and can never stop the ones after it: its frame is
encoded for every codec its targets use before anyone gets it (a value a codec
cannot carry fails there, and nobody gets it), and a fan-out job that raises all
the same is dropped, logged at most once per minute (``Hub.log_throttle``), and
the jobs queued behind it run (issue 13: one publish wedged the sliced fan-out
queue, and with it every later broadcast of the server).
"""


from __future__ import annotations

import logging
from collections import deque
from time import perf_counter
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.protocol import codec
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON, JSON_WIRE, FrameVariants, frame_for

log = logging.getLogger("realtime_lab.core")

#: Sessions (flush) or subscribers (fan-out) handled between two looks at the clock.
SLICE_STEP = 32
_OPEN = ConnectionState.OPEN
_NORMAL = Priority.NORMAL


class FanOut:
    """What is left of one broadcast: the same frame for ``targets[index:]``."""

    __slots__ = ("delivered", "failed", "frame", "index", "message", "priority", "targets",
                 "variants")

    def __init__(self, targets: list[Session], frame: bytes, priority: Priority,
                 message: dict[str, Any] | None) -> None:
        self.targets = targets
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
            if wire is not JSON_WIRE and wire.codec != JSON:  # the one other codec
                self.frame_for(session)
                return

    def frame_for(self, session: Session) -> bytes:
        """This broadcast's frame in ``session``'s wire format (each built once)."""
        if session.wire is JSON_WIRE:
            return self.frame
        if self.variants is None:
            self.variants = FrameVariants(self.frame, self.message)
        return self.variants.get(session.wire)


class Delivery(HubBase):
    """Queues frames per connection and writes them once per turn (part of Hub)."""

    # Made on first use, so Hub.__init__ (hub.py) needs no change.
    _fanout_jobs: deque[FanOut] | None = None
    _fanout_busy = False
    _fanout_again = False
    _urgent: list[Session] | None = None  # sessions with a control frame during a sliced flush
    _flush_deferred_at: float | None = None  # first flush put off behind a sliced fan-out
    _flush_partial = False  # a sliced flush has sessions left for the next turn
    _fanout_deadline: float | None = None  # end of this turn's time for large fan-outs

    def send(self, session: Session, message: dict[str, Any],
             priority: Priority = Priority.CONTROL, *, text: str | None = None) -> bool:
        """Encode and queue one message for one session (replies are control priority).

        ``text``: the message already encoded as JSON, used on a JSON connection.
        """
        wire = session.wire
        if wire is JSON_WIRE:
            return self._enqueue(session, text_frame(
                codec.encode(message) if text is None else text), priority)
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
        self._mark_dirty(session)
        if priority == Priority.CONTROL and (len(self._dirty) > self.options.fanout_slice_min
                                             or self._fanout_jobs):
            if self._urgent is None:  # a sliced flush is under way: this one goes first
                self._urgent = []
            self._urgent.append(session)
        return True

    # ------------------------------------------------------------------ fan-out

    def _fan_out_to(self, targets: list[Session], frame: bytes, priority: Priority,
                    message: dict[str, Any] | None = None) -> int:
        """Queue ``frame`` for every session of ``targets``; return how many got it.

        Up to ``fanout_slice_min`` targets are done at once. A larger fan-out is
        done in slices of about ``fanout_slice_seconds`` per loop turn, the rest
        in later turns; while one is unfinished, later broadcasts queue behind
        it, so every connection still gets the broadcasts in publish order. The
        count then includes the targets still to come.
        """
        job = FanOut(targets, frame, priority, message)
        if self.binary_sessions:  # a JSON-only server has nothing else to encode
            try:
                job.prepare()
            except Exception:
                self._fan_out_failed(job, "could not be encoded")
                return 0
        jobs = self._fanout_jobs
        if jobs is None:
            jobs = self._fanout_jobs = deque()
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
        jobs = self._fanout_jobs
        if self._fanout_busy or not jobs:  # a scheduler that runs callbacks at once
            self._fanout_again = True
            return
        deadline = self._turn_deadline()
        if deadline is None:  # this turn's fan-out time is spent: go on in the next one
            self._schedule(self._run_fan_outs)
            return
        self._fanout_busy = True
        try:
            while jobs:
                job = jobs[0]
                targets = job.targets
                while job.index < len(targets):
                    self._enqueue_many(job, job.index + SLICE_STEP)
                    if perf_counter() >= deadline:
                        self._flush_if_waited_enough()
                        self._fanout_again = False
                        self._schedule(self._run_fan_outs)
                        if not self._fanout_again:
                            return  # the rest runs in a later turn
                        deadline = perf_counter() + self.options.fanout_slice_seconds
                jobs.popleft()
            self._flush_if_waited_enough(done=True)
        finally:
            self._fanout_busy = False

    def _turn_deadline(self) -> float | None:
        """When this loop turn's fan-out time ends (``fanout_slice_seconds`` for all
        the large broadcasts of the turn together); None once it has passed."""
        deadline = self._fanout_deadline
        if deadline is None:
            deadline = self._fanout_deadline = perf_counter() + self.options.fanout_slice_seconds
            self._schedule(self._end_fanout_turn)
            return deadline  # at least one step, even with no time at all
        return deadline if perf_counter() < deadline else None

    def _end_fanout_turn(self) -> None:
        self._fanout_deadline = None

    def _flush_if_waited_enough(self, *, done: bool = False) -> None:
        """Schedule the flush put off behind the fan-outs once they are ``done`` or
        it has waited ``fanout_flush_delay``."""
        since = self._flush_deferred_at
        if since is None or self._flush_scheduled:
            return
        if done or perf_counter() - since >= self.options.fanout_flush_delay:
            self._flush_scheduled = True
            self._schedule(self.flush)

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
        enqueue = self._enqueue
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
                        self._dirty.append(session)
                        if not self._flush_scheduled:
                            self._flush_scheduled = True
                            self._schedule(self.flush)
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
            for session in urgent:
                if session.dirty:
                    self._flush_session(session)
        if self._fanout_jobs and not self._flush_partial and self._put_off_flush():
            return
        self._flush_deferred_at = None
        self._flush_partial = False
        dirty, self._dirty = self._dirty, []
        flush_session = self._flush_session
        count = len(dirty)
        if count <= self.options.fanout_slice_min:
            for session in dirty:
                if session.dirty:
                    flush_session(session)
            return
        deadline = perf_counter() + self.options.fanout_slice_seconds
        done = 0
        while done < count:
            for session in dirty[done:done + SLICE_STEP]:
                if session.dirty:
                    flush_session(session)
            done += SLICE_STEP
            if done < count and perf_counter() >= deadline:
                rest = dirty[done:]
                rest += self._dirty
                self._dirty = rest
                self._flush_partial = True
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._schedule(self.flush)
                return

    def _put_off_flush(self) -> bool:
        """True while the first put-off flush is younger than ``fanout_flush_delay``
        (the fan-out's last slice or that deadline schedules the flush again)."""
        now = perf_counter()
        since = self._flush_deferred_at
        if since is None:
            self._flush_deferred_at = since = now
        return now - since < self.options.fanout_flush_delay

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
        elif self.presence_pager.active and not force:  # a member list in pages (presence_sync)
            self.presence_pager.pump(session)

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
        if reason == "hook":
            self.stats.dropped_by_hook += 1
        if self.bus.active:
            self.bus.emit(ev.MessageDropped(at=self.clock(), session=session.id, user=session.user,
                                            channel=channel, priority=Priority(priority).label,
                                            size=size, reason=reason))

    def _await_drain(self, session: Session) -> None:
        """Flush again once the transport has written its backlog."""
        if session.awaiting_drain:
            return
        session.awaiting_drain = True
        session.port.when_drained(lambda: self._drained(session))

    def _drained(self, session: Session) -> None:
        session.awaiting_drain = False
        if session.state is ConnectionState.OPEN and session.pending:
            self._mark_dirty(session)
        elif self.presence_pager.active:
            self.presence_pager.pump(session)

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
        session.port.discard_unsent()  # the close frame goes right after what the OS has
        if self.bus.active:
            self.bus.emit(ev.LimitExceeded(at=self.clock(), session=session.id, user=session.user,
                                           limit="max_outbound_bytes",
                                           code=CloseCode.SLOW_CONSUMER, remote=session.remote))
        self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")

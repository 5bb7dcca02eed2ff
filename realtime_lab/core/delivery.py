"""The outbound path: per-connection queues, one write per connection per loop turn,
priorities under pressure, and the slow-consumer policy.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.
"""


from __future__ import annotations

import logging
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.protocol import codec
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, frame_for

log = logging.getLogger("realtime_lab.core")


class Delivery(HubBase):
    """Queues frames per connection and writes them once per turn (part of Hub)."""

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

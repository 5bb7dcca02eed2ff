"""Channel history and recovery: offsets, an epoch, and what a reconnecting client missed.

:class:`HistoryService` is a service of :class:`realtime_lab.core.hub.Hub`
(``hub.services.history``; docs/channels.md#history-and-recovery).

Channels matching a :class:`HistoryRule` keep their last ``size`` messages for at
most ``ttl`` seconds. Every message published to such a channel carries
``offset`` (1, 2, 3, ... per channel) and ``epoch`` (changes when the history is
lost, e.g. after a server restart). A subscribe with ``since: {offset, epoch}``
gets, right after ``subscribed``, every retained message after that offset, in
order, then ``{"type": "recovered", "complete": ...}``; no live message can come
between them (the hub handles the subscribe in one step).

One server numbers a message on the way through its backplane
(:meth:`HistoryService.number`, called by ``core.backplane.LocalBackplane``). With
a broker (several nodes) the broker numbers a history channel's messages and keeps
its history, so offsets, epoch and recovery are the same on every node; each node
delivers them in offset order when the broker sends them back. A subscribe to such
a channel holds the session's live messages (:meth:`HistoryService.hold`) until the
node has the broker's position (one atomic read: epoch, offset, and with ``since``
the retained messages after it). Then the hub sends ``subscribed`` with that
position and :meth:`HistoryService.finish` the missed messages, ``recovered``, and
the held live messages whose offset is above the position. The read may be ahead
of the messages still to come from the broker; until those arrive, the session
skips live messages at or below its position (its *floor*). So every message is
sent exactly once, in offset order, whichever node the client used before.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from realtime_lab.core.backplane import HistoryRead, Publication, numbered_text
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.ports import Clock
from realtime_lab.core.session import Session
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, FrameVariants


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Keep the last ``size`` messages, at most ``ttl`` seconds (None: no age limit),
    of channels matching ``pattern`` (fnmatch glob)."""

    pattern: str
    size: int = 100
    ttl: float | None = 300.0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"history size must be > 0, got {self.size}")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"history ttl must be > 0 seconds, got {self.ttl}")


class HistoryStore:
    """One channel's retained messages (numbered in this process: one server)."""

    __slots__ = ("epoch", "items", "offset", "rule")

    def __init__(self, rule: HistoryRule) -> None:
        self.rule = rule
        self.epoch = secrets.token_hex(4)
        self.offset = 0  # of the last message
        self.items: deque[tuple[int, float, dict[str, Any]]] = deque(maxlen=rule.size)

    def append(self, msg: dict[str, Any], now: float) -> int:
        """Number ``msg`` (sets its ``offset`` and ``epoch``) and keep it."""
        self.offset += 1
        msg["offset"] = self.offset
        msg["epoch"] = self.epoch
        self.items.append((self.offset, now, msg))
        return self.offset

    def prune(self, now: float) -> None:
        ttl = self.rule.ttl
        if ttl is None:
            return
        items = self.items
        while items and now - items[0][1] > ttl:
            items.popleft()

    def since(self, offset: int, epoch: str, now: float) -> tuple[list[dict[str, Any]], bool]:
        """The retained messages after ``offset`` and whether they are all that was missed."""
        self.prune(now)
        if epoch != self.epoch or offset > self.offset or offset < 0:
            return [], False
        missed = [msg for off, _, msg in self.items if off > offset]
        first = self.items[0][0] if self.items else self.offset + 1
        complete = first <= offset + 1
        return missed, complete


#: The name the store had before it was the service's (issue 14 step 6).
History = HistoryStore

#: A live message held for a session that waits for its position:
#: (epoch, offset, id of a session that must not get it or "", encoded text).
Held = tuple[str, int, str, str]
#: ``send(session, message, priority)``: queue one message (``Outbox.send``).
Send = Callable[[Session, dict[str, Any], Priority], bool]
#: ``enqueue(session, frame, priority)``: queue one built frame (``Outbox.enqueue``).
Enqueue = Callable[[Session, bytes, Priority], bool]


class HistoryService:
    """History per channel pattern, recovery on subscribe, and the live messages held
    for sessions that wait for their position (``hub.services.history``)."""

    def __init__(self, options: ServerOptions, *, clock: Clock, send: Send,
                 enqueue: Enqueue) -> None:
        self.options = options
        self.clock = clock
        self.send = send
        self.enqueue = enqueue
        #: Channels numbered in this process (one server), by name.
        self.stores: dict[str, HistoryStore] = {}
        self._waiting: dict[str, dict[str, list[Held]]] = {}  # channel -> session -> held
        self._since: dict[tuple[str, str], dict[str, Any]] = {}  # (session, channel) -> since
        self._last_offset: dict[str, tuple[str, int]] = {}  # channel -> (epoch, offset) seen
        self._floors: dict[str, dict[str, tuple[str, int]]] = {}  # channel -> session -> pos
        #: Subscribes with ``since`` answered from a broker's history.
        self.recoveries = 0

    # ------------------------------------------------------------------ rules and stores

    def rule(self, name: str) -> HistoryRule | None:
        """The first history rule matching channel ``name`` (None: no history)."""
        rules: tuple[HistoryRule, ...] = self.options.history
        for rule in rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return rule
        return None

    def store(self, name: str) -> HistoryStore | None:
        """Channel ``name``'s store in this process (made on first use; None: no rule)."""
        store = self.stores.get(name)
        if store is None and self.options.history:
            rule = self.rule(name)
            if rule is not None:
                store = self.stores[name] = HistoryStore(rule)
        return store

    def number(self, pub: Publication) -> None:
        """Give a publication of this process its offset and epoch, and keep it."""
        store = self.store(pub.channel)
        if store is None or pub.message is None:
            return
        now = self.clock()
        store.prune(now)
        pub.offset = store.append(pub.message, now)
        pub.epoch = store.epoch
        pub.text = numbered_text(pub.text, pub.offset, pub.epoch)

    def position(self, name: str, reply: dict[str, Any]) -> None:
        """Add the channel's current ``offset`` and ``epoch`` to a ``subscribed`` reply."""
        store = self.store(name)
        if store is not None:
            reply["offset"] = store.offset
            reply["epoch"] = store.epoch

    def messages(self, name: str) -> list[dict[str, Any]]:
        """The retained messages of channel ``name`` (oldest first; ``hub.history``)."""
        store = self.stores.get(name)
        if store is None:
            return []
        store.prune(self.clock())
        return [msg for _, _, msg in store.items]

    # ------------------------------------------------------------------ recovery

    def recover(self, session: Session, name: str, since: dict[str, Any]) -> None:
        """Send ``session`` what it missed in ``name`` since ``since``, then ``recovered``;
        a session waiting for a broker's position gets them with it (:meth:`finish`)."""
        waiting = self._waiting.get(name)
        if waiting is not None and session.id in waiting:
            self._since[(session.id, name)] = since
            return
        store = self.store(name)
        offset, epoch = since.get("offset"), since.get("epoch")
        missed: list[dict[str, Any]] = []
        complete = False
        if store is not None and isinstance(offset, int) and isinstance(epoch, str):
            missed, complete = store.since(offset, epoch, self.clock())
        for msg in missed:  # normal priority: in order with the live messages that follow
            self.send(session, msg, Priority.NORMAL)
        self.send(session, recovered_message(
            name, complete, len(missed), store.offset if store else 0,
            store.epoch if store else None), Priority.NORMAL)

    # ------------------------------------------------------------------ positions from a broker

    def hold(self, session: Session, name: str) -> None:
        """Hold ``session``'s live messages of ``name`` until :meth:`finish` (a
        subscribe that waits for a broker's position)."""
        if self.rule(name) is not None:
            self._waiting.setdefault(name, {})[session.id] = []

    def release(self, session: Session, name: str) -> None:
        """``session`` left ``name``: forget what was held or skipped for it."""
        for table in (self._waiting, self._floors):
            per_channel = table.get(name)
            if per_channel is not None:
                per_channel.pop(session.id, None)
                if not per_channel:
                    del table[name]
        self._since.pop((session.id, name), None)

    def forget(self, name: str) -> None:
        """This node no longer gets ``name``'s messages: the next one starts afresh."""
        self._last_offset.pop(name, None)

    def wanted(self, session: Session, name: str) -> tuple[int, float | None] | None:
        """``(offset, ttl)`` to read for a session that waits for its position (offset
        -1: the position only); None when it waits for none."""
        waiting = self._waiting.get(name)
        rule = self.rule(name)
        if waiting is None or session.id not in waiting or rule is None:
            return None
        since = self._since.get((session.id, name))
        offset = since.get("offset") if since else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            offset = -1
        return offset, rule.ttl

    def finish(self, session: Session, name: str, read: HistoryRead | None) -> None:
        """Send the missed messages, ``recovered``, then the held live messages."""
        waiting = self._waiting.get(name)
        held = waiting.pop(session.id, None) if waiting is not None else None
        if waiting is not None and not waiting:
            del self._waiting[name]
        since = self._since.pop((session.id, name), None)
        if held is None or name not in session.subscriptions or not session.is_open:
            return
        if since is not None:
            offset, epoch = since.get("offset"), since.get("epoch")
            missed: list[str] = []
            complete = False
            if read is not None and isinstance(offset, int) and isinstance(epoch, str):
                complete = read.complete_since(offset, epoch)
                if epoch == read.epoch:
                    missed = read.texts
            for text in missed:
                self._send_text(session, text)
            self.send(session, recovered_message(
                name, complete, len(missed), read.offset if read else 0,
                read.epoch if read else None), Priority.NORMAL)
            self.recoveries += 1
        for epoch, off, exclude, text in held:
            if read is not None and epoch == read.epoch and off <= read.offset:
                continue  # before the position, or already sent as recovered
            if exclude != session.id:
                self._send_text(session, text)
        last = self._last_offset.get(name)
        if read is not None and (last is None or last[0] != read.epoch or last[1] < read.offset):
            # the read is ahead of the broker's deliveries: skip what is still to come up to it
            self._floors.setdefault(name, {})[session.id] = (read.epoch, read.offset)

    def _send_text(self, session: Session, text: str) -> None:
        frame = text_frame(text)
        if session.wire is not JSON_WIRE:
            frame = FrameVariants(frame).get(session.wire)
        self.enqueue(session, frame, Priority.NORMAL)

    # ------------------------------------------------------------------ delivery

    def sequence(self, name: str, epoch: str, offset: int) -> int:
        """A broker-numbered message arrives: -1 when ``offset`` was seen already (drop
        it), else how many offsets were skipped before it (0: none)."""
        last = self._last_offset.get(name)
        gap = 0
        if last is not None and last[0] == epoch:
            if offset <= last[1]:
                return -1
            gap = offset - last[1] - 1
        self._last_offset[name] = (epoch, offset)
        return gap

    def admit(self, pub: Publication) -> Collection[str]:
        """Ids of this node's sessions that must not get ``pub`` now: those waiting for
        their position (it is held for them) and those whose position is at or above
        its offset. Empty in the common case."""
        name = pub.channel
        waiting = self._waiting.get(name)
        floors = self._floors.get(name)
        if not waiting and not floors:
            return ()
        skip: set[str] = set()
        if waiting:
            exclude = pub.exclude  # the origin's own session (set only on the origin)
            for held in waiting.values():
                held.append((pub.epoch, pub.offset, exclude, pub.text))
            skip.update(waiting)
        if floors:
            skip.update(self._below_floor(name, floors, pub.epoch, pub.offset))
        return skip

    def _below_floor(self, name: str, floors: dict[str, tuple[str, int]], epoch: str,
                     offset: int) -> list[str]:
        """Sessions whose position is at or above ``offset``; drop floors passed."""
        below = []
        for sid, (floor_epoch, floor) in list(floors.items()):
            if floor_epoch == epoch and offset <= floor:
                below.append(sid)  # already sent (recovered) or before its position
            if floor_epoch != epoch or offset >= floor:
                del floors[sid]
        if not floors:
            del self._floors[name]
        return below


def recovered_message(channel: str, complete: bool, count: int, offset: int,
                      epoch: str | None) -> dict[str, Any]:
    """The ``recovered`` message that ends a recovery (docs/protocol.md), built here only."""
    return {"type": "recovered", "channel": channel, "complete": complete, "count": count,
            "offset": offset, "epoch": epoch}

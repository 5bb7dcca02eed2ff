"""Channel history and recovery: offsets, an epoch, and what a reconnecting client missed.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin; docs/channels.md#history-and-recovery).

Channels matching a :class:`HistoryRule` keep their last ``size`` messages for at
most ``ttl`` seconds. Every message published to such a channel carries
``offset`` (1, 2, 3, ... per channel) and ``epoch`` (changes when the history is
lost, e.g. after a server restart). A subscribe with ``since: {offset, epoch}``
gets, right after ``subscribed``, every retained message after that offset, in
order, then ``{"type": "recovered", "complete": ...}``; no live message can come
between them (the hub handles the subscribe in one step).

With a broker (several nodes) the broker numbers a history channel's messages
and keeps its history, so offsets, epoch and recovery are the same on every
node: :meth:`Recovery._publish_numbered` hands the message to the node
(realtime_lab/broker/recovery.py), which delivers it when the broker sends it
back, and :meth:`Recovery.recover` leaves the recovery to the node.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import Session
from realtime_lab.protocol import codec


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


class History:
    """One channel's retained messages."""

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


class Recovery(HubBase):
    """History per channel pattern and recovery on subscribe (part of Hub)."""

    _histories: dict[str, History]

    def history_rule(self, name: str) -> HistoryRule | None:
        """The first history rule matching channel ``name`` (None: no history)."""
        rules: tuple[HistoryRule, ...] = self.options.history
        for rule in rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return rule
        return None

    def _history(self, name: str) -> History | None:
        history = self._histories.get(name)
        if history is None and self.options.history:
            rule = self.history_rule(name)
            if rule is not None:
                history = self._histories[name] = History(rule)
        return history

    def _publish_numbered(self, name: str, msg: dict[str, Any], exclude: Session | None,
                          priority: Priority) -> int | None:
        """With a broker: let it number and deliver a history channel's message.

        Returns the local subscriber count when the broker took the message, or
        None when the hub must deliver it itself (no broker: numbered here by
        :meth:`_record`; no history rule, or broker unreachable: unnumbered).
        """
        cluster = self.cluster
        if cluster is None:
            self._record(name, msg)
            return None
        if not cluster.publish_numbered(name, codec.encode(msg), exclude):
            return None
        channel = self.channels.get(name)
        if self.bus.active:
            self.bus.emit(ev.MessagePublished(at=self.clock(), channel=name,
                                              user=msg.get("from"), priority=priority.label))
        if channel is None:
            return 0
        return len(channel.subscribers) - (exclude is not None and exclude.id
                                           in channel.subscribers)

    def _record(self, name: str, msg: dict[str, Any]) -> None:
        """Give a published message its offset and epoch, and keep it (history channels)."""
        history = self._history(name)
        if history is not None:
            now = self.clock()
            history.prune(now)
            history.append(msg, now)

    def _position(self, name: str, reply: dict[str, Any]) -> None:
        """Add the channel's current ``offset`` and ``epoch`` to a ``subscribed`` reply."""
        history = self._history(name)
        if history is not None:
            reply["offset"] = history.offset
            reply["epoch"] = history.epoch

    def recover(self, session: Session, name: str, since: dict[str, Any]) -> None:
        """Send ``session`` what it missed in ``name`` since ``since``, then ``recovered``."""
        if self.cluster is not None and self.history_rule(name) is not None:
            self.cluster.recover(session, name, since)  # from the broker's history
            return
        history = self._history(name)
        offset, epoch = since.get("offset"), since.get("epoch")
        missed: list[dict[str, Any]] = []
        complete = False
        if history is not None and isinstance(offset, int) and isinstance(epoch, str):
            missed, complete = history.since(offset, epoch, self.clock())
        for msg in missed:  # normal priority: in order with the live messages that follow
            self.send(session, msg, Priority.NORMAL)
        self.send(session, {
            "type": "recovered", "channel": name, "complete": complete, "count": len(missed),
            "offset": history.offset if history else 0,
            "epoch": history.epoch if history else None}, Priority.NORMAL)

    def history(self, name: str) -> list[dict[str, Any]]:
        """The retained messages of channel ``name`` (oldest first)."""
        history = self._histories.get(name)
        if history is None:
            return []
        history.prune(self.clock())
        return [msg for _, _, msg in history.items]

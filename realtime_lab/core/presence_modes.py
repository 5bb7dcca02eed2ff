"""Presence modes per channel (full, counts, off), the member limit, throttled counts.

docs/presence.md, "Presence modes". A channel's mode comes from its rule
(``ChannelRule.presence``) or the server's options (``presence_channels``,
``presence_mode``); the hub keeps members the same way in ``full`` and ``counts``
(so ``server.presence()``, the hooks and the events see them), and only what goes
to clients differs:

* ``full``: the member list (``presence_state`` or pages) to each new subscriber,
  then ``presence_diff`` s (core/presence_sync.py, core/presence_batch.py);
* ``counts``: one ``presence_count`` to each new subscriber, then a
  ``presence_count`` to the channel at most once per ``presence_count_interval``
  when the member count changed (the last change of a burst always goes out);
* ``off``: nothing (the channel tracks no members).

Member limit (``presence_full_limit``, ``ChannelRule.presence_limit``): a full
channel whose member count passes it either refuses the join with
``presence_full`` (``over_limit="refuse"``) or falls back to counts (``"counts"``,
the default): its subscribers get one ``presence_mode`` message, the member
lists still on their way are stopped and no diff follows, so no client keeps a
stale member list without knowing. A channel that fell back stays in counts
until it is empty (no flapping around the limit; its next life starts full).

The count is the presence service's reader (``PresenceService.count``: cluster-wide
with a broker); the service knows nothing of sockets: the hub gives it ``send``
(one message to one connection) and ``broadcast`` (one message to a channel).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from realtime_lab.errors import PresenceFull

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.ports import Scheduler, Timer
    from realtime_lab.core.session import Session

log = logging.getLogger("realtime_lab.core")

FULL, COUNTS, OFF = "full", "counts", "off"
#: The ``reason`` of a ``presence_mode`` message sent because the limit was passed.
LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class PresencePolicy:
    """A channel's presence mode, the member limit of full presence and what passing
    it does (``counts``: fall back; ``refuse``: ``presence_full``)."""

    mode: str
    limit: int
    over: str


#: The member count of a channel (cluster-wide with a broker).
CountMembers = Callable[["Channel"], int]
#: One message to one connection; False when it is closing.
SendOne = Callable[["Session", dict[str, object]], bool]
#: One message to every local subscriber of a channel, encoded once.
Broadcast = Callable[["Channel", dict[str, object]], None]
#: Stop the member lists of a channel still on their way (the pager).
CancelLists = Callable[["Channel"], None]


def count_message(channel: str, count: int) -> dict[str, object]:
    """``{"type": "presence_count", "channel", "count"}``."""
    return {"type": "presence_count", "channel": channel, "count": count}


def mode_message(channel: str, mode: str, count: int, limit: int) -> dict[str, object]:
    """``{"type": "presence_mode", "channel", "mode", "count", "reason", "limit"}``."""
    return {"type": "presence_mode", "channel": channel, "mode": mode, "count": count,
            "reason": LIMIT, "limit": limit}


@dataclass(slots=True)
class _Counted:
    """The counts of one channel in counts mode: the last count sent, when, the timer."""

    channel: Channel
    sent: int = -1
    sent_at: float = -math.inf
    timer: Timer | None = None


#: Channels whose policies are kept (the rules never change; the cache is cleared
#: when it grows past this).
POLICY_CACHE = 4096


class PresenceModes:
    """The mode of each presence channel, its member limit and its throttled counts.

    The hub calls :meth:`admit` before a member joins, :meth:`mode` when it answers
    a subscribe (``full``: the member list; ``counts``: :meth:`send_count`), and
    :meth:`divert` with each diff it would send (True: the channel is not full,
    the diff stays here and the count is sent when due).
    """

    def __init__(self, options: ServerOptions, *, policy: Callable[[str], PresencePolicy],
                 count: CountMembers, send: SendOne, broadcast: Broadcast,
                 cancel_lists: CancelLists, clock: Callable[[], float],
                 live: Callable[[str], Channel | None]) -> None:
        self.interval = options.presence_count_interval
        self.hard_limit = options.max_presence_members
        self._policy_of = policy
        self._count = count
        self._send = send
        self._broadcast = broadcast
        self._cancel_lists = cancel_lists
        self._clock = clock
        self._live = live
        self._policies: dict[str, PresencePolicy] = {}
        self._counted: dict[str, _Counted] = {}
        self._scheduler: Scheduler | None = None
        #: ``presence_count`` messages broadcast, and channels that fell back to counts.
        self.counts_sent = 0
        self.fallbacks = 0

    def bind(self, scheduler: Scheduler) -> None:
        """Wait out count intervals on ``scheduler`` (``Hub.bind``); until then a count
        goes out at once."""
        self._scheduler = scheduler

    def policy(self, name: str) -> PresencePolicy:
        """Channel ``name``'s mode and limit (its rule's, else the options')."""
        policy = self._policies.get(name)
        if policy is None:
            if len(self._policies) >= POLICY_CACHE:
                self._policies.clear()
            policy = self._policies[name] = self._policy_of(name)
        return policy

    # ------------------------------------------------------------------ joins

    def admit(self, channel: Channel | None, user: str) -> None:
        """Raise :class:`PresenceFull` when ``user`` may not become a member of
        ``channel``: ``max_presence_members`` in any mode, or the member limit of a
        full channel whose policy is ``refuse``."""
        if channel is None or not channel.presence or user in channel.members:
            return
        count = self._count(channel)
        name = channel.name
        if count >= self.hard_limit:
            raise PresenceFull(f"{name!r} has {count} members; the limit is "
                               f"{self.hard_limit} (max_presence_members)")
        if channel.presence_mode == FULL:
            policy = self.policy(name)
            if policy.over == "refuse" and count >= policy.limit:
                raise PresenceFull(f"{name!r} has {count} members; the limit of full "
                                   f"presence is {policy.limit} (presence_full_limit)")

    def mode(self, channel: Channel) -> str:
        """The channel's mode now: a full channel past its limit (``over_limit``
        ``counts``) falls back to counts here, and its subscribers are told."""
        if channel.presence_mode == FULL:
            policy = self.policy(channel.name)
            if policy.over == COUNTS:
                count = self._count(channel)
                if count > policy.limit:
                    self._fall_back(channel, count, policy.limit)
        return channel.presence_mode if channel.presence else OFF

    def _fall_back(self, channel: Channel, count: int, limit: int) -> None:
        channel.presence_mode = COUNTS
        self.fallbacks += 1
        self._cancel_lists(channel)  # no page after the switch: the list is given up
        counted = self._state(channel)
        counted.sent, counted.sent_at = count, self._clock()
        log.info("presence of %r falls back to counts: %d members, limit %d",
                 channel.name, count, limit)
        self._broadcast(channel, mode_message(channel.name, COUNTS, count, limit))

    # ------------------------------------------------------------------ counts

    def divert(self, channel: Channel) -> bool:
        """A diff for ``channel``: True when it is not to be sent (counts mode: the
        count goes out when due instead)."""
        if self.mode(channel) == FULL:
            return False
        if channel.presence_mode == COUNTS:
            self.changed(channel)
        return True

    def send_count(self, session: Session, channel: Channel) -> None:
        """A new subscriber of a counts channel: the count now."""
        self._send(session, count_message(channel.name, self._count(channel)))

    def changed(self, channel: Channel) -> None:
        """The members of a counts channel changed: send the count when due (at once
        when the interval since the last one has passed: the next loop turn)."""
        counted = self._state(channel)
        if counted.timer is not None:
            return
        scheduler = self._scheduler
        if scheduler is None:
            self._due(channel.name)
            return
        delay = max(0.0, counted.sent_at + self.interval - self._clock())
        name = channel.name
        counted.timer = scheduler.call_later(delay, lambda: self._due(name))

    def _due(self, name: str) -> None:
        counted = self._counted.get(name)
        if counted is None:
            return
        counted.timer = None
        channel = counted.channel
        if self._live(name) is not channel or not channel.subscribers:
            del self._counted[name]  # the channel is gone (or a new one has the name)
            return
        count = self._count(channel)
        if count != counted.sent:
            counted.sent, counted.sent_at = count, self._clock()
            self.counts_sent += 1
            self._broadcast(channel, count_message(name, count))

    def _state(self, channel: Channel) -> _Counted:
        counted = self._counted.get(channel.name)
        if counted is None and len(self._counted) >= POLICY_CACHE:  # forget emptied channels
            self._counted = {n: c for n, c in self._counted.items()
                             if c.timer is not None or self._live(n) is c.channel}
        if counted is None or counted.channel is not channel:
            if counted is not None and counted.timer is not None:
                counted.timer.cancel()
            counted = self._counted[channel.name] = _Counted(channel)
        return counted

    def close(self) -> None:
        """Stop the timers and forget the counts (the server stops)."""
        for counted in self._counted.values():
            if counted.timer is not None:
                counted.timer.cancel()
        self._counted.clear()

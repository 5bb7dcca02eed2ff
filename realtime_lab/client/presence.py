"""Client-side presence: rebuild each channel's member list from state and diffs.

Applying a ``presence_diff`` is: remove its ``leaves``, then put its ``joins``
(a join for a known user replaces that user's info). This gives the server's
member map with either wire (docs/presence.md): with ``presence_details`` (the
server default) a member that stays but changes (a tab opened or closed, a new
state or metadata) comes in ``joins`` with its whole info and in ``changed``;
leaves carry a ``reason``. :meth:`PresenceView.apply` also says what happened.

A diff may name many members: the server merges a channel's changes over
``presence_batch_window`` (docs/presence.md, "Batched diffs"), and it may name a
member this client already has as it is (a join it saw in its ``presence_state``)
or a leave of one it never saw: neither is reported.

A large member list comes in ``presence_page`` messages (docs/protocol.md,
"Presence pages"): page 1 starts a new list, later pages of the same ``sync`` are
merged into it, diffs that arrive meanwhile are applied to it, and the page with
``"more": false`` makes it the channel's list (reported like a ``presence_state``).
Until then :meth:`PresenceView.members` gives the previous list.

A channel in counts mode (docs/presence.md, "Presence modes") sends no member
list: a ``presence_count`` after ``subscribed`` and whenever the count changed
(throttled), and a full channel that passes its member limit sends one
``presence_mode`` (``"mode": "counts"``): the view then drops the channel's
member list, so it is never silently stale. :meth:`PresenceView.count` gives the
count in either mode, :meth:`PresenceView.mode` the mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PresenceChange:
    """What one presence message changed in a channel's member list."""

    channel: str
    #: user -> info, for users who were not listed before.
    joined: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: user -> the fields that changed (``connections``, ``state``, ``meta``).
    updated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: user -> leave reason (``closed``, ``timeout``, ``kicked``; None: unsubscribed,
    #: or gone while this client was not subscribed).
    left: dict[str, str | None] = field(default_factory=dict)
    #: The member count a ``presence_count`` or ``presence_mode`` gave (counts mode).
    count: int | None = None
    #: The new mode a ``presence_mode`` announced (``counts``), else None.
    mode: str | None = None


_FIELDS = ("connections", "state", "meta")


def _diff_fields(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f for f in _FIELDS if before.get(f) != after.get(f))


def _changed(before: dict[str, Any], after: dict[str, Any],
             hint: list[str] | None) -> tuple[str, ...]:
    """The fields that differ: those of the diff's ``changed`` entry (a merged diff may
    name a field that changed and changed back, or that this client already has: it is
    left out), or, without an entry, every field compared."""
    if hint is None:
        return _diff_fields(before, after)
    return tuple(f for f in hint if before.get(f) != after.get(f))


#: The ``presence_page`` format this client reads (its ``v`` field).
PAGE_VERSION = 1


@dataclass(slots=True)
class _Build:
    """A member list arriving in pages: its ``sync``, the next page, the members so far."""

    sync: int
    next_page: int
    members: dict[str, dict[str, Any]]


class PresenceView:
    """Members per channel, as the server announced them."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, dict[str, Any]]] = {}
        #: The member count of each channel in counts mode.
        self.counts: dict[str, int] = {}
        self._builds: dict[str, _Build] = {}

    def mode(self, channel: str) -> str | None:
        """``full`` (a member list), ``counts`` (a count only), or None (nothing yet)."""
        if channel in self.counts:
            return "counts"
        return "full" if channel in self.channels or channel in self._builds else None

    def count(self, channel: str) -> int | None:
        """The member count: the ``presence_count`` in counts mode, else the list's size
        (None before anything arrived)."""
        if channel in self.counts:
            return self.counts[channel]
        members = self.channels.get(channel)
        return None if members is None else len(members)

    def syncing(self, channel: str) -> bool:
        """Whether a member list of ``channel`` is arriving in pages."""
        return channel in self._builds

    def apply(self, msg: dict[str, Any]) -> PresenceChange:
        """Apply a ``presence_state``, ``presence_page`` or ``presence_diff`` message;
        return what changed (nothing until the last page of a list has arrived)."""
        channel = msg["channel"]
        kind = msg["type"]
        if kind in ("presence_count", "presence_mode"):
            return self._count(msg)
        if channel in self.counts:
            if kind == "presence_diff":  # a counts channel sends none: a straggler
                return PresenceChange(channel)
            del self.counts[channel]  # a member list: full again (a new subscription)
        if kind == "presence_page":
            return self._page(msg)
        build = self._builds.get(channel)
        if build is not None:
            if msg["type"] != "presence_state":  # a diff while pages arrive
                _apply_diff(build.members, msg)
                return PresenceChange(channel)
            del self._builds[channel]
        return self._apply(msg)

    def _count(self, msg: dict[str, Any]) -> PresenceChange:
        """A ``presence_count``, or a ``presence_mode`` (the channel left full mode: its
        member list is dropped, every member reported as gone with no reason)."""
        channel = msg["channel"]
        change = PresenceChange(channel, count=msg.get("count"))
        if msg["type"] == "presence_mode":
            change.mode = msg.get("mode")
            self._builds.pop(channel, None)
            for user in self.channels.pop(channel, {}):
                change.left[user] = None
        count = msg.get("count")
        if isinstance(count, int):
            self.counts[channel] = count
        return change

    def _page(self, msg: dict[str, Any]) -> PresenceChange:
        channel = msg["channel"]
        if msg.get("v") != PAGE_VERSION:  # a format this client does not know
            self._builds.pop(channel, None)
            return PresenceChange(channel)
        build = self._builds.get(channel)
        if msg["page"] == 1:
            build = self._builds[channel] = _Build(msg["sync"], 1, {})
        elif build is None or msg["sync"] != build.sync or msg["page"] != build.next_page:
            return PresenceChange(channel)  # a straggler of a list given up
        build.members.update(msg["members"])
        build.next_page += 1
        if msg.get("more"):
            return PresenceChange(channel)
        del self._builds[channel]
        return self._apply({"type": "presence_state", "channel": channel,
                            "members": build.members})

    def _apply(self, msg: dict[str, Any]) -> PresenceChange:
        channel = msg["channel"]
        change = PresenceChange(channel)
        before = self.channels.get(channel, {})
        if msg["type"] == "presence_state":
            members = self.channels[channel] = dict(msg["members"])
            for user in before.keys() - members.keys():
                change.left[user] = None
            joins: dict[str, dict[str, Any]] = members
            hints: dict[str, Any] = {}
        else:
            members = self.channels.setdefault(channel, {})
            for user, info in msg.get("leaves", {}).items():
                if members.pop(user, None) is not None:
                    change.left[user] = (info or {}).get("reason")
            joins = msg.get("joins", {})
            hints = msg.get("changed") or {}
        for user, info in joins.items():
            known = before.get(user) if msg["type"] == "presence_state" else members.get(user)
            if known is None or user in change.left:
                change.joined[user] = info
            else:
                fields = _changed(known, info, hints.get(user))
                if fields:
                    change.updated[user] = fields
            members[user] = info
        return change

    def members(self, channel: str) -> list[str]:
        return sorted(self.channels.get(channel, {}))

    def forget(self, channel: str) -> None:
        self.channels.pop(channel, None)
        self.counts.pop(channel, None)
        self._builds.pop(channel, None)


def _apply_diff(members: dict[str, dict[str, Any]], msg: dict[str, Any]) -> None:
    """Leaves, then joins (a join replaces a known user's info)."""
    for user in msg.get("leaves", {}):
        members.pop(user, None)
    members.update(msg.get("joins", {}))

"""A node's mirror of one channel's cluster-wide presence (broker/node.py).

:class:`ChannelLink` holds the cluster-wide connection counts of a channel this
node has subscribers for: loaded from the broker's snapshot, then kept current
by the broker's presence events (each with the channel's version, so an event
the snapshot already holds is skipped).

**Holding** (docs/scaling.md, "When Redis comes back empty"): from the moment the
broker link is lost until the broker reports that the cluster has settled (every
node seen before the loss has published its members again, or ``resync_hold``
passed), the link keeps the broker's events in its buffer instead of showing
them, and shows this node's own joins and leaves to its local subscribers at
once. Then :meth:`ChannelLink.reload` takes the new snapshot and the node sends
only the difference between what its clients were shown and the settled
members (:func:`resync_diff`): a member who never left is never announced as
leaving and joining again.

:class:`LinkMembers` is the member list a new subscriber gets (through the
hub's one builder, core/presence_sync.py): the mirror, with this node's own
members (who may be ahead of it) and their metadata.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from realtime_lab.broker.base import PresenceEvent
from realtime_lab.protocol import messages

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel


@dataclass(eq=False, slots=True)
class ChannelLink:
    """This node's view of one channel's cluster-wide presence."""

    members: dict[str, int] = field(default_factory=dict)
    version: int = -1  # -1: unknown (no snapshot): apply every event
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: list[PresenceEvent] = field(default_factory=list)
    #: The broker's events wait in ``buffer`` (the cluster is resynchronising).
    holding: bool = False

    def apply(self, ev: PresenceEvent) -> bool:
        """Apply an event unless the snapshot already holds it; return True if applied."""
        if self.version >= 0 and ev.version <= self.version:
            return False
        if ev.version > self.version >= 0:
            self.version = ev.version
        if ev.connections > 0:
            self.members[ev.user] = ev.connections
        else:
            self.members.pop(ev.user, None)
        return True

    def waits(self) -> bool:
        """Whether a broker event must wait in the buffer (no snapshot yet, or holding)."""
        return self.holding or not self.ready.is_set()

    def reload(self, snapshot: tuple[int, dict[str, int]]) -> dict[str, int]:
        """Take a new snapshot, then the events that waited; stop holding.

        Returns the members as they were before (what the clients were shown).
        """
        before = self.members
        self.version, self.members = snapshot
        buffered, self.buffer = self.buffer, []
        for ev in buffered:
            self.apply(ev)
        self.holding = False
        return before

    def show_local(self, user: str, delta: int) -> str | None:
        """While holding: count one local connection of ``user`` in (+1) or out (-1).

        Returns ``"join"`` or ``"leave"`` when the user appears or disappears, else None.
        """
        before = self.members.get(user, 0)
        after = max(before + delta, 0)
        if after:
            self.members[user] = after
        else:
            self.members.pop(user, None)
        if before == 0 < after:
            return "join"
        if after == 0 < before:
            return "leave"
        return None


def member_info(link: ChannelLink, channel: Channel, user: str) -> dict[str, Any] | None:
    """``user``'s cluster-wide info: connections (the local count may be ahead of the
    mirror) and, for a local member, its metadata; None when not a member."""
    count = max(link.members.get(user, 0), channel.members.get(user, 0))
    if count <= 0:
        return None
    info: dict[str, Any] = {"connections": count}
    meta = channel.metas.get(user)  # presence metadata is known for local users only
    if meta:
        info["meta"] = meta
    return info


def merged_counts(link: ChannelLink, channel: Channel) -> dict[str, int]:
    """The mirror's counts with the local members' (when ahead) merged in."""
    counts = dict(link.members)
    for user, count in channel.members.items():
        if counts.get(user, 0) < count:
            counts[user] = count
    return counts


class LinkMembers:
    """The cluster-wide member list of a channel (a core.presence_sync.MemberSource)."""

    __slots__ = ("channel", "link")

    def __init__(self, link: ChannelLink, channel: Channel) -> None:
        self.link = link
        self.channel = channel

    def users(self) -> list[str]:
        return list(merged_counts(self.link, self.channel))

    def infos(self, users: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for user in users:
            info = member_info(self.link, self.channel, user)
            if info is not None:
                out[user] = info
        return out


def resync_diff(link: ChannelLink, channel: Channel,
                before: dict[str, int]) -> dict[str, Any] | None:
    """The ``presence_diff`` from the members shown before a resync (``before``, the
    mirror then, with the local members now) to the settled ones; None when equal."""
    shown = dict(before)
    for user, count in channel.members.items():
        if shown.get(user, 0) < count:
            shown[user] = count
    now = merged_counts(link, channel)
    joins = {u: member_info(link, channel, u) or {} for u in now if u not in shown}
    leaves = {u: {"connections": 0} for u in shown if u not in now}
    if not joins and not leaves:
        return None
    return messages.presence_diff_message(channel.name, joins, leaves)

"""A node's mirror of one channel's cluster-wide presence (broker/backplane.py).

:class:`ChannelLink` holds the cluster-wide presence of a channel this node has
subscribers for: each member's connections and info (state, metadata), loaded
from the broker's table, then kept current by the broker's presence events (each
with the channel's version, so an event the table already holds, late or twice,
is skipped). It also keeps what this node's clients were shown (``shown``): every
``presence_diff`` the node sends is the difference between that and the cluster
view now (:meth:`ChannelLink.diff`), so a member present before and after is an
update or nothing, never a join, whatever order the events came in.

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
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from realtime_lab.broker.base import PresenceEvent, PresenceTable
from realtime_lab.protocol import codec, messages

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel

MemberInfo = dict[str, object]

#: The fields of a member an update may change (``changed`` on the wire).
FIELDS = ("connections", "state", "meta")


def info_text(channel: Channel, user: str, default_state: str) -> str:
    """A local member's info as it travels (:class:`PresenceEvent` ``info``)."""
    out: dict[str, object] = {}
    state = channel.states.get(user)
    if state is not None and state != default_state:
        out["state"] = state
    meta = channel.metas.get(user)
    if meta:
        out["meta"] = meta
    return codec.encode(out)


def decode_info(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text) if text else {}
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


@dataclass(eq=False, slots=True)
class ChannelLink:
    """This node's view of one channel's cluster-wide presence."""

    members: dict[str, int] = field(default_factory=dict)
    #: user -> ``{"state"?, "meta"?}`` as the broker keeps it
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = -1  # -1: unknown (no snapshot): apply every event
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: list[PresenceEvent] = field(default_factory=list)
    #: The broker's events wait in ``buffer`` (the cluster is resynchronising).
    holding: bool = False
    #: What this node's clients were shown: user -> info (``connections``, ...).
    shown: dict[str, MemberInfo] = field(default_factory=dict)

    def apply(self, ev: PresenceEvent) -> bool:
        """Apply an event unless the table already holds it; return True if applied."""
        if self.version >= 0 and ev.version <= self.version:
            return False
        if ev.version > self.version >= 0:
            self.version = ev.version
        if ev.connections > 0:
            self.members[ev.user] = ev.connections
            if ev.info:
                self.infos[ev.user] = decode_info(ev.info)
        else:
            self.members.pop(ev.user, None)
            self.infos.pop(ev.user, None)
        return True

    def load(self, table: PresenceTable) -> None:
        """Take the broker's table (infos it lacks are kept: Redis came back without them)."""
        self.version, self.members = table.version, dict(table.counts)
        infos = {u: decode_info(i) for u, i in table.infos.items()}
        self.infos = {u: infos.get(u, self.infos.get(u, {})) for u in self.members}

    def waits(self) -> bool:
        """Whether a broker event must wait in the buffer (no snapshot yet, or holding)."""
        return self.holding or not self.ready.is_set()

    def reload(self, table: PresenceTable) -> None:
        """Take a new table, then the events that waited; stop holding."""
        self.load(table)
        buffered, self.buffer = self.buffer, []
        for ev in buffered:
            self.apply(ev)
        self.holding = False

    def show_local(self, user: str, delta: int, info: dict[str, Any] | None = None) -> None:
        """While holding: count one local connection of ``user`` in (+1) or out (-1),
        or (``info``) change its info."""
        if info is not None:
            if user in self.members:
                self.infos[user] = info
            return
        after = max(self.members.get(user, 0) + delta, 0)
        if after:
            self.members[user] = after
        else:
            self.members.pop(user, None)
            self.infos.pop(user, None)

    # ------------------------------------------------------------------ the view

    def counts(self, channel: Channel) -> dict[str, int]:
        """The cluster's connections per member, with the local members' (when ahead)."""
        counts = dict(self.members)
        for user, count in channel.members.items():
            if counts.get(user, 0) < count:
                counts[user] = count
        return counts

    def info(self, channel: Channel, user: str, default_state: str) -> MemberInfo | None:
        """``user``'s cluster-wide info (None: not a member): connections (the local
        count may be ahead of the mirror), state and metadata."""
        count = max(self.members.get(user, 0), channel.members.get(user, 0))
        if count <= 0:
            return None
        out: MemberInfo = {"connections": count}
        known = self.infos.get(user)
        if known is None:  # a local member the broker has not confirmed yet
            known = decode_info(info_text(channel, user, default_state))
        state = known.get("state")
        if state is not None and state != default_state:
            out["state"] = state
        meta = known.get("meta")
        if meta:
            out["meta"] = meta
        return out

    def view(self, channel: Channel, default_state: str) -> dict[str, MemberInfo]:
        """Every member's cluster-wide info."""
        out = {}
        for user in self.counts(channel):
            info = self.info(channel, user, default_state)
            if info is not None:
                out[user] = info
        return out

    def diff(self, channel: Channel, users: list[str] | None, default_state: str, *,
             details: bool, reasons: dict[str, str] | None = None,
             quiet: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        """The ``presence_diff`` from what the clients were shown to the view now, for
        ``users`` (None: everyone either lists), and remember the view as shown.

        Absent before and present now: a join; present before and gone: a leave (with
        its reason from ``reasons`` when ``details``); present in both: an update whose
        ``changed`` names the fields that differ (``connections`` only with
        ``details``), or nothing. ``quiet``: users whose update is not news (a kick
        taking a tab: only its leave is). None when nothing changed."""
        if users is None:
            users = list(dict.fromkeys([*self.shown, *self.counts(channel)]))
        joins: dict[str, MemberInfo] = {}
        leaves: dict[str, MemberInfo] = {}
        changed: dict[str, list[str]] = {}
        for user in users:
            old = self.shown.get(user)
            new = self.info(channel, user, default_state)
            if new is None:
                if old is not None:
                    del self.shown[user]
                    leave: MemberInfo = {"connections": 0}
                    reason = (reasons or {}).get(user, "")
                    if details and reason and reason != "left":
                        leave["reason"] = reason
                    leaves[user] = leave
                continue
            if old is None:
                self.shown[user] = new
                joins[user] = new
                continue
            fields = [f for f in FIELDS if old.get(f) != new.get(f)
                      and (details or f != "connections")]
            if not fields or user in quiet:
                continue
            self.shown[user] = new
            joins[user] = new
            changed[user] = fields
        if not joins and not leaves:
            return None
        diff = messages.presence_diff_message(channel.name, joins, leaves)
        if changed:
            diff["changed"] = changed
        return diff


class LinkMembers:
    """The cluster-wide member list of a channel (a core.presence_sync.MemberSource)."""

    __slots__ = ("channel", "default_state", "link")

    def __init__(self, link: ChannelLink, channel: Channel, default_state: str) -> None:
        self.link = link
        self.channel = channel
        self.default_state = default_state

    def users(self) -> list[str]:
        return list(self.link.counts(self.channel))

    def infos(self, users: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for user in users:
            info = self.link.info(self.channel, user, self.default_state)
            if info is not None:
                out[user] = info
        return out

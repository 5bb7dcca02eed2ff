"""BrokerBackplane (``ClusterNode``): joins a hub to a broker so that channels and
presence span nodes.

It is the hub's backplane (core/backplane.py): the hub's one publish path
(core/publish.py) hands it each publication, encoded once after the outbound
middleware; the broker calls back :meth:`BrokerBackplane.on_envelope`, which hands
what other nodes published to the same path (``on_publication``). The hub's presence
calls :meth:`BrokerBackplane.subscribed`, :meth:`BrokerBackplane.left` and
:meth:`BrokerBackplane.updated`, and reads the cluster-wide members through it.

* A publish is delivered locally at once and handed to the broker as one envelope
  carrying the already-encoded message text; a node that receives it builds one
  frame and appends the same bytes to each local subscriber.
* Presence: the hub keeps local members; the broker keeps the cluster-wide table
  (connections, state and metadata per member) and decides join/leave once for the
  cluster. Each node mirrors the cluster members of the channels it has local
  subscribers for (``links``); every change (a join, a leave with its reason, a
  second tab, a state or metadata change) goes to the broker, comes back to every
  node (this one too) as a versioned presence envelope, and each node sends its
  local subscribers the difference between what they were shown and the cluster
  view now, through the hub's one way for diffs (``Hub.announce_presence``).
  After a lost broker link the node holds the broker's envelopes until the
  cluster has settled, then sends only the real difference (presence_link.py,
  redis_resync.py).
* ``subscribed`` is sent once the node receives the channel's envelopes and the
  subscriber counts in the cluster table, so a client that got its reply will
  receive every later publish from any node, and appears in every node's
  ``GET /api/channels``.
* Grace period (``presence_grace``): when a session's connection closes, the
  node withdraws its presence contribution only after the grace; a connection
  of the same user arriving meanwhile, on this node or any other, is counted
  before the withdrawal, so the cluster-wide count never reaches zero and no
  leave or join is sent. A node that dies takes its delayed contributions with
  it: the survivors reap them (leave) within the node TTL.
* History channels: offsets and epoch come from the broker
  (:meth:`Broker.publish_numbered`), every node (the publisher's included)
  delivers in offset order when the broker sends the message back, once each
  (duplicates dropped, gaps counted in ``missed``), and a subscribe waits for the
  broker's position (and, with ``since``, the missed messages) before it lets live
  messages through (core/history.py ``HistoryService``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import secrets
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime_lab.broker.base import (
    HISTORY,
    KICK,
    MESSAGE,
    PRESENCE,
    Broker,
    Contributions,
    Envelope,
    PresenceEvent,
)
from realtime_lab.broker.presence_link import ChannelLink, LinkMembers, decode_info, info_text
from realtime_lab.core.backplane import Answer, BackplaneListener, HistoryRead, Publication
from realtime_lab.core.channels import KICKED
from realtime_lab.protocol import codec

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.ports import Timer
    from realtime_lab.core.presence_sync import MemberSource
    from realtime_lab.core.session import Session

log = logging.getLogger("realtime_lab.broker")


#: Seconds a subscribe waits for the broker before answering anyway.
SUBSCRIBE_WAIT = 5.0


@dataclass(slots=True)
class NodeStats:
    """Deliveries of envelopes from other nodes to this node's subscribers."""

    envelopes_in: int = 0
    remote_deliveries: int = 0
    unrouted: int = 0  # envelopes for a channel with no local subscriber (left meanwhile)
    missed: int = 0  # gaps in an origin's per-channel sequence: envelopes that never came
    presence_diffs: int = 0
    resyncs: int = 0  # channel member lists reloaded after the broker settled
    resync_diffs: int = 0  # of which changed something (one presence_diff each)


class BrokerBackplane:
    """One server's membership in a cluster of servers sharing a broker."""

    def __init__(self, hub: Hub, broker: Broker, *, node_id: str | None = None) -> None:
        self.hub = hub
        self.broker = broker
        self.node_id = node_id or secrets.token_hex(6)
        self.history = hub.services.history
        self.listener: BackplaneListener | None = None
        self.links: dict[str, ChannelLink] = {}
        self.stats = NodeStats()
        self._seq: dict[str, int] = {}  # channel -> envelopes this node published to it
        self._last_seq: dict[str, dict[str, int]] = {}  # channel -> origin -> last seq seen
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counted: set[tuple[str, str]] = set()  # (session id, channel) in the cluster table
        #: (channel, user) -> withdrawals waiting out the grace period (earliest first)
        self._grace: dict[tuple[str, str], list[Timer]] = {}
        self._stopped = False
        #: The broker link was lost and the cluster has not settled since (presence_link.py).
        self._holding = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> BrokerBackplane:
        await self.broker.start(self.node_id, self)
        self.hub.use_backplane(self)
        return self

    def attach(self, listener: BackplaneListener) -> None:
        self.listener = listener

    async def stop(self, *, crash: bool = False) -> None:
        """Leave the cluster (after the hub closed its sessions). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.hub.cluster is self:
            self.hub.use_backplane(None)
        for task in list(self._tasks):
            task.cancel()
        for timers in self._grace.values():  # stop: withdrawn at once; crash: reaped
            for timer in timers:
                timer.cancel()
        self._grace.clear()
        if crash:
            await self.broker.crash()
        else:
            await self.broker.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ hub hooks

    def subscribed(self, session: Session, channel: Channel, answer: Answer) -> None:
        """A local session subscribed: count it cluster-wide; ``answer`` when ready."""
        name = channel.name
        link = self.links.get(name)
        if link is None:
            link = self.links[name] = ChannelLink(holding=self._holding)
            self._spawn(self._activate(name, link))
        if session.id in channel.hidden:  # subscribed without presence (on_presence veto)
            applied: Awaitable[None] = asyncio.sleep(0)
        else:
            self._counted.add((session.id, name))
            if self._take_over(name, session.user):  # its contribution never left
                applied = asyncio.sleep(0)
            else:
                applied = self._change(name, session.user, +1, session,
                                       info=info_text(channel, session.user, self._default))
        self._spawn(self._ready(session, name, link, applied, answer))

    def left(self, session: Session, channel: Channel, reason: str = "") -> None:
        """A local session left ``channel`` (the hub already removed it); ``reason``:
        left, closed, timeout or kicked."""
        name = channel.name
        self.history.release(session, name)
        if (session.id, name) in self._counted:
            self._counted.discard((session.id, name))
            grace = self.hub.options.presence_grace
            if grace > 0 and not session.is_open and channel.presence:  # closed or timed out
                self._delay_withdrawal(name, session.user, grace, reason)
            else:  # unsubscribed or kicked: at once
                self._change(name, session.user, -1, reason=reason)
        if not channel.subscribers and self.links.pop(name, None) is not None:
            self.broker.unsubscribe(name)
            self._last_seq.pop(name, None)
            self.history.forget(name)

    def updated(self, channel: Channel, user: str, changed: list[str]) -> None:
        """Local member ``user`` of ``channel`` has a new state or metadata: tell the
        cluster (every node shows it when the broker's envelope comes back)."""
        name = channel.name
        link = self.links.get(name)
        if link is None:
            return
        info = info_text(channel, user, self._default)
        if link.holding:  # the broker's echo waits: show it here now
            link.show_local(user, 0, decode_info(info))
            self._show_diff(channel, link, user)
        self.broker.presence_change(name, user, 0, info=info, changed=",".join(changed))

    def kick(self, name: str, user: str, reason: str) -> None:
        """``Hub.kick`` on this node: the other nodes kick ``user``'s connections too,
        and withdrawals of ``user`` waiting out their grace here go now (leave ``kicked``)."""
        self._kicked(name, user)  # every node with subscribers of ``name`` gets it
        self.broker.publish(Envelope(self.node_id, 0, name, KICK, json.dumps(
            {"u": user, "r": reason}, separators=(",", ":"))))

    def _kicked(self, name: str, user: str) -> None:
        for timer in self._grace.pop((name, user), []):
            timer.cancel()
            self._change(name, user, -1, reason=KICKED)

    def _on_kick(self, env: Envelope) -> None:
        if env.origin == self.node_id:
            return
        try:
            obj = json.loads(env.payload)
            user, reason = str(obj["u"]), str(obj.get("r") or KICKED)
        except (ValueError, KeyError, TypeError):
            self.broker.stats.dropped_in += 1
            return
        self._kicked(env.channel, user)
        self.hub.services.presence.kick_here(env.channel, user, reason)

    @property
    def _default(self) -> str:
        return self.hub.options.presence_states[0]

    def publish(self, pub: Publication) -> int:
        """A publication of this node: a history channel's goes to the broker to be
        numbered and comes back to every node (this one too); any other is delivered
        here at once and sent to the other nodes as one envelope."""
        name = pub.channel
        rule = pub.history
        if rule is not None and self.broker.publish_numbered(
                name, pub.text, size=rule.size, ttl=rule.ttl, exclude=pub.exclude):
            channel = self.hub.channels.get(name)
            if channel is None:
                return 0
            return len(channel.subscribers) - (pub.exclude in channel.subscribers)
        seq = self._seq[name] = self._seq.get(name, 0) + 1
        self.broker.publish(Envelope(self.node_id, seq, name, MESSAGE, pub.text))
        listener = self.listener
        return listener.on_publication(pub) if listener is not None else 0

    # ------------------------------------------------------------------ grace period

    def _delay_withdrawal(self, name: str, user: str, grace: float, reason: str) -> None:
        """Withdraw one connection of ``user`` from ``name`` after ``grace`` seconds
        (a timer on the hub's scheduler)."""
        key = (name, user)
        timers = self._grace.setdefault(key, [])
        timers.append(self.hub.scheduler.call_later(
            grace, lambda: self._withdraw_now(key, reason)))

    def _withdraw_now(self, key: tuple[str, str], reason: str) -> None:
        timers = self._grace.get(key)
        if not timers:
            return
        timers.pop(0)
        if not timers:
            del self._grace[key]
        if not self._stopped:
            self._change(key[0], key[1], -1, reason=reason)

    def _change(self, name: str, user: str, delta: int, joiner: Session | None = None, *,
                info: str = "", reason: str = "") -> Awaitable[None]:
        """Count one connection of ``user`` in or out of ``name`` cluster-wide.

        While the link holds (the broker link was lost or the cluster is resyncing)
        the broker's echo waits, so the change is shown to local subscribers now.
        """
        link = self.links.get(name)
        if link is not None and link.holding:
            link.show_local(user, delta)
            channel = self.hub.channels.get(name)
            if channel is not None:
                self._show_diff(channel, link, user, joiner, reason=reason,
                                quiet=reason == KICKED)
        return self.broker.presence_change(name, user, delta, info=info, reason=reason)

    def _show_diff(self, channel: Channel, link: ChannelLink, user: str | None,
                   joiner: Session | None = None, *, reason: str = "",
                   quiet: bool = False) -> None:
        """Send the local subscribers what changed in the cluster view for ``user``
        (None: for everyone) since they were last shown it, through the hub's one
        way for presence diffs (merged per window by its PresenceBatcher)."""
        if not channel.presence:
            return
        diff = link.diff(channel, None if user is None else [user], self._default,
                         details=self.hub.options.presence_details,
                         reasons={user: reason} if user is not None and reason else None,
                         quiet=frozenset((user,)) if quiet and user is not None else frozenset())
        if diff is None:
            return
        joins = diff.get("joins") or {}
        if joiner is None and user is not None and user in joins and "changed" not in diff:
            # the joining connection got its own member list instead
            joiner = next((s for s in channel.subscribers.values() if s.user == user), None)
        self.hub.announce_presence(channel.name, diff, joiner)
        self.stats.presence_diffs += 1

    def _take_over(self, name: str, user: str) -> bool:
        """A connection of ``user`` arrives while one of its contributions waits: keep it."""
        timers = self._grace.get((name, user))
        if not timers:
            return False
        timers.pop(0).cancel()
        if not timers:
            del self._grace[(name, user)]
        return True

    # ------------------------------------------------------------------ subscribe

    async def _activate(self, name: str, link: ChannelLink) -> None:
        await self.broker.subscribe(name)
        await self._load(name, link)

    async def _load(self, name: str, link: ChannelLink) -> None:
        table = await self.broker.presence_table(name)
        if self.links.get(name) is not link:  # everyone left meanwhile
            link.ready.set()
            return
        channel = self.hub.channels.get(name)
        if table is None:  # broker unreachable: local members only, apply all events
            link.version = -1
            link.members = dict(channel.members) if channel else {}
        else:
            link.load(table)
        buffered, link.buffer = link.buffer, []
        for ev in buffered:
            link.apply(ev)
        if channel is not None:  # what a subscriber's member list shows from now on
            link.shown = link.view(channel, self._default)
        link.ready.set()

    async def _ready(self, session: Session, name: str, link: ChannelLink,
                     applied: Awaitable[None], answer: Answer) -> None:
        """Wait until the change is applied and the link loaded, read the history
        position the session waits for (if any), then ``answer``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(applied, link.ready.wait()), SUBSCRIBE_WAIT)
        read: HistoryRead | None = None
        wanted = self.history.wanted(session, name)
        if wanted is not None:
            read = await self.broker.history_since(name, wanted[0], ttl=wanted[1])
        answer(read)

    # ------------------------------------------------------------------ broker callbacks

    def on_envelope(self, envelope: Envelope) -> None:
        if envelope.kind == MESSAGE:
            self._on_message(envelope)
        elif envelope.kind == HISTORY:
            self._on_numbered(envelope)
        elif envelope.kind == PRESENCE:
            self._on_presence(envelope)
        elif envelope.kind == KICK:
            self._on_kick(envelope)

    def _on_numbered(self, env: Envelope) -> None:
        """A history channel's message, numbered by the broker: deliver it once, in order."""
        name = env.channel
        epoch, exclude, text = env.payload.split("\n", 2)
        gap = self.history.sequence(name, epoch, env.seq)
        if gap < 0:
            self.broker.stats.duplicates += 1
            return
        self.stats.missed += gap
        self._deliver(Publication(name, text, env.origin,
                                  exclude if env.origin == self.node_id else "",
                                  offset=env.seq, epoch=epoch))

    def _deliver(self, pub: Publication) -> None:
        self.stats.envelopes_in += 1
        listener = self.listener
        if pub.channel not in self.hub.channels or listener is None:
            self.stats.unrouted += 1
            return
        self.stats.remote_deliveries += listener.on_publication(pub)

    def _on_message(self, env: Envelope) -> None:
        if env.origin == self.node_id:
            return
        seen = self._last_seq.setdefault(env.channel, {})
        last = seen.get(env.origin)
        if last is not None:
            if env.seq <= last:
                self.broker.stats.duplicates += 1
                return
            self.stats.missed += env.seq - last - 1
        seen[env.origin] = env.seq
        self._deliver(Publication(env.channel, env.payload, env.origin))

    def _on_presence(self, env: Envelope) -> None:
        link = self.links.get(env.channel)
        if link is None:
            return
        ev = PresenceEvent.from_payload(env.payload)
        if link.waits():
            link.buffer.append(ev)
            return
        if not link.apply(ev):  # late or twice: the table holds it already
            return
        channel = self.hub.channels.get(env.channel)
        if channel is None:
            return
        if ev.info and ev.user in channel.members:
            self._adopt(channel, link, ev.user)
        self._show_diff(channel, link, ev.user, reason=ev.reason,
                        quiet=ev.reason == KICKED and ev.connections > 0)

    def _adopt(self, channel: Channel, link: ChannelLink, user: str) -> None:
        """A local member's state and metadata as the cluster has them (a change made
        through another node): this node's hub holds what every node shows."""
        info = link.infos.get(user, {})
        state = info.get("state")
        channel.set_state(user, state if isinstance(state, str) else self._default,
                          self._default)
        meta = info.get("meta")
        if meta != (channel.metas.get(user) or None):
            meta = meta if isinstance(meta, dict) and meta else None
            channel.put_meta(user, meta, len(codec.encode(meta)) if meta else 0)

    def local_presence(self) -> Contributions:
        """Connections per (channel, user), counting those waiting out their grace."""
        out = {(name, user): count for name, channel in self.hub.channels.items()
               for user, count in channel.members.items()}
        for key, timers in self._grace.items():
            out[key] = out.get(key, 0) + len(timers)
        return out

    def local_infos(self) -> dict[tuple[str, str], str]:
        """The infos of this node's members, as they travel (a resync publishes them)."""
        default = self._default
        return {(name, user): info_text(channel, user, default)
                for name, channel in self.hub.channels.items() for user in channel.members}

    def on_connection_change(self, connected: bool) -> None:
        """Lost: hold every link. Back and settled: reload each and show the difference."""
        if self._stopped:
            return
        self._holding = not connected
        for name, link in list(self.links.items()):
            link.holding = True
            if connected:
                self._spawn(self._resync(name, link))

    async def _resync(self, name: str, link: ChannelLink) -> None:
        """Reload the cluster members of ``name``; send local subscribers one diff with
        what really changed since they were last shown the members (nothing when a
        member only seemed gone meanwhile; a member there before and after is an
        update or nothing, never a join)."""
        await link.ready.wait()  # a link made during the hold: its first load comes first
        table = await self.broker.presence_table(name)
        if table is None or self._holding or self.links.get(name) is not link:
            return  # lost again (the next settle reloads) or nobody left here
        link.reload(table)
        self.stats.resyncs += 1
        channel = self.hub.channels.get(name)
        if channel is None or not channel.presence:
            return
        before = self.stats.presence_diffs
        self._show_diff(channel, link, None)
        if self.stats.presence_diffs != before:
            self.stats.resync_diffs += 1

    # ------------------------------------------------------------------ views

    def counts(self, name: str) -> tuple[int, int] | None:
        """Cluster-wide ``(subscribers, members)`` of ``name`` as this node knows them."""
        link = self.links.get(name)
        channel = self.hub.channels.get(name)
        if link is None or channel is None:
            return None
        counts = link.counts(channel)
        return sum(counts.values()), len(counts)

    def member_source(self, name: str) -> MemberSource | None:
        """The cluster-wide member list a new subscriber of ``name`` gets."""
        link = self.links.get(name)
        channel = self.hub.channels.get(name)
        if link is None or channel is None:
            return None
        return LinkMembers(link, channel, self._default)

    def presence(self, name: str) -> dict[str, dict[str, object]] | None:
        """Cluster-wide members of a channel this node has subscribers for (None: not
        known here)."""
        link = self.links.get(name)
        channel = self.hub.channels.get(name)
        if link is None or channel is None:
            return None
        return link.view(channel, self._default)

    async def channel_list(self) -> list[dict[str, object]]:
        """Every channel in the cluster, counts cluster-wide, with this node's share."""
        local: dict[str, dict[str, Any]] = {
            str(c["name"]): c for c in self.hub.services.registry.describe_all()}
        cluster = await self.broker.cluster_channels()
        out: list[dict[str, object]] = []
        if cluster is None:
            for desc in local.values():
                desc.update(local_subscribers=desc["subscribers"],
                            local_members=desc["members"], cluster=False)
                out.append(desc)
            return out
        pattern = self.hub.options.presence_channels
        for name in sorted(set(local) | set(cluster)):
            desc = local.get(name) or {
                "name": name, "subscribers": 0, "members": 0, "messages": 0,
                "presence": pattern is not None and fnmatch.fnmatchcase(name, pattern),
                "created_at": None,
            }
            members = cluster.get(name, {})
            desc.update(local_subscribers=desc["subscribers"], local_members=desc["members"],
                        subscribers=sum(members.values()), members=len(members), cluster=True)
            out.append(desc)
        return out

    def describe(self) -> dict[str, object]:
        """Node id, broker state and counters (``GET /api/cluster``)."""
        return {
            "node": self.node_id,
            "broker": type(self.broker).__name__,
            "connected": self.broker.connected,
            "channels": sorted(self.links),
            "broker_stats": self.broker.stats.as_dict(),
            "node_stats": {
                "envelopes_in": self.stats.envelopes_in,
                "remote_deliveries": self.stats.remote_deliveries,
                "unrouted": self.stats.unrouted,
                "missed": self.stats.missed,
                "presence_diffs": self.stats.presence_diffs,
                "published": sum(self._seq.values()),
                "grace_pending": sum(len(t) for t in self._grace.values()),
                "recoveries": self.history.recoveries,
                "resyncs": self.stats.resyncs,
                "resync_diffs": self.stats.resync_diffs,
            },
        }


ClusterNode = BrokerBackplane
"""The name :class:`BrokerBackplane` had before it was the hub's backplane (kept:
``LabServer.cluster`` is one)."""

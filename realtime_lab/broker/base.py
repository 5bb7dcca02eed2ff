"""The broker contract: how a publish and a presence change reach the other nodes.

A *node* is one server process (or one :class:`~realtime_lab.server.LabServer`
in a notebook). Nodes never talk to each other; each talks to a broker:

* :meth:`Broker.publish` sends an :class:`Envelope` (origin node id, per-node
  sequence number, channel, payload) to every node subscribed to its channel, in
  the order this node published them;
* the broker calls :meth:`BrokerListener.on_envelope` for each envelope it
  receives (a node ignores its own, by ``origin``);
* :meth:`Broker.subscribe` / :meth:`Broker.unsubscribe` say which channels this
  node wants envelopes for (only channels with local subscribers);
* :meth:`Broker.presence_change` adds or removes one connection of a user to a
  channel in the cluster-wide presence table (with the member's info: state and
  metadata, and the reason of a leave), or, with a delta of 0, changes the
  member's info; the broker applies it atomically and, when something changes,
  sends a presence envelope (``kind="p"``, numbered with the channel's version) to
  every node subscribed to the channel, the sender's included. ``join`` /
  ``leave`` are decided there, once for the whole cluster;
* :meth:`Broker.publish_numbered` is the publish of a *history* channel: the
  broker gives the message the channel's next offset and its epoch, keeps it in
  the channel's capped history and sends it (``kind="h"``) to every subscribed
  node, the publishing node included, so that every node delivers the messages
  of a channel in one order, the offset order;
  :meth:`Broker.history_since` reads that history back for a recovery.

Two implementations: :class:`~realtime_lab.broker.memory.MemoryBroker` (one
process, several nodes on one :class:`~realtime_lab.broker.memory.InMemoryBus`)
and :class:`~realtime_lab.broker.redis.RedisBroker`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from realtime_lab.core.backplane import HistoryRead

MESSAGE = "m"
PRESENCE = "p"
HISTORY = "h"
KICK = "k"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What travels between nodes.

    ``payload`` is the already-encoded JSON text of the client message for
    ``kind="m"`` (so the receiving node builds its frame without re-encoding),
    and a small JSON object ``{"u": user, "n": connections, "v": version,
    "e": "join"|"leave"|"count"|"update"}`` for ``kind="p"``, with, when there
    are, ``"i"`` (the member's info: the JSON text of ``{"state", "meta"}``),
    ``"r"`` (a leave's reason) and ``"c"`` (the fields an update changed). ``seq`` is the origin
    node's sequence number, counted per channel (1, 2, ... for each channel the
    node publishes to) so that a receiver sees duplicates (``seq`` not above the
    last one) and gaps (envelopes it never got); presence envelopes carry 0.

    ``kind="k"``: a kick (``Hub.kick``) for the nodes where the user has connections:
    ``{"u": user, "r": reason}``; ``seq`` is 0.

    ``kind="h"`` (a message of a history channel): ``seq`` is the channel's
    offset given by the broker and ``payload`` is ``epoch\nexclude\ntext``,
    where ``text`` is the encoded message with its ``offset`` and ``epoch`` and
    ``exclude`` the id of a session of the origin node that must not get it
    (``echo_to_sender=False``) or "".
    """

    origin: str
    seq: int
    channel: str
    kind: str
    payload: str

    def encode(self) -> bytes:
        return f"{self.origin}\n{self.seq}\n{self.kind}\n{self.channel}\n{self.payload}".encode()

    @classmethod
    def decode(cls, data: bytes | str) -> Envelope:
        text = data.decode() if isinstance(data, bytes) else data
        origin, seq, kind, channel, payload = text.split("\n", 4)
        return cls(origin, int(seq), channel, kind, payload)


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """The decoded payload of a presence envelope.

    ``info``: the member's info as the JSON text of ``{"state": ..., "meta": ...}``
    (each only when not the default; "" when unknown); ``reason``: why a connection
    went (``left``, ``closed``, ``timeout``, ``kicked``; "" when none was given);
    ``changed``: the fields an ``update`` changed (comma-separated).
    """

    user: str
    connections: int
    version: int
    event: str  # "join", "leave", "count" or "update"
    info: str = ""
    reason: str = ""
    changed: str = ""

    @classmethod
    def from_payload(cls, payload: str) -> PresenceEvent:
        obj = json.loads(payload)
        return cls(str(obj["u"]), int(obj["n"]), int(obj["v"]), str(obj["e"]),
                   str(obj.get("i") or ""), str(obj.get("r") or ""), str(obj.get("c") or ""))

    def to_payload(self) -> str:
        obj: dict[str, object] = {"u": self.user, "n": self.connections, "v": self.version,
                                  "e": self.event}
        if self.info:
            obj["i"] = self.info
        if self.reason:
            obj["r"] = self.reason
        if self.changed:
            obj["c"] = self.changed
        return json.dumps(obj, separators=(",", ":"))


def presence_event(user: str, before: int, after: int, version: int, *, info: str = "",
                   reason: str = "", changed: str = "") -> PresenceEvent:
    """The event for a user's cluster-wide count going from ``before`` to ``after``
    (equal and above 0: an ``update`` of the member's info)."""
    event = "join" if before <= 0 < after else "leave" if after <= 0 < before else \
        "update" if before == after else "count"
    return PresenceEvent(user, max(after, 0), version, event, "" if after <= 0 else info,
                         reason, changed if event == "update" else "")


@dataclass(frozen=True, slots=True)
class PresenceTable:
    """A channel's cluster-wide presence: its version, connections and infos per user."""

    version: int
    counts: dict[str, int]
    infos: dict[str, str]


@dataclass(slots=True)
class BrokerStats:
    """Counters of one node's broker since it started. Nothing is dropped silently."""

    published: int = 0        # envelopes handed to the broker and sent
    received: int = 0         # envelopes received from other nodes
    dropped_out: int = 0      # envelopes not sent (broker disconnected or write failed)
    dropped_in: int = 0       # received envelopes that could not be decoded
    duplicates: int = 0       # received envelopes with a sequence already seen
    presence_ops: int = 0     # presence changes sent
    presence_deferred: int = 0  # presence changes made while disconnected (resynced later)
    reconnects: int = 0       # successful reconnections after a failure
    resyncs: int = 0          # presence resynchronisations
    reaped_nodes: int = 0     # dead nodes whose presence this node removed
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Contributions = dict[tuple[str, str], int]


class BrokerListener(Protocol):
    """What a broker calls back on its node (implemented by ClusterNode)."""

    def on_envelope(self, envelope: Envelope) -> None:
        """An envelope for a channel this node subscribed to."""

    def local_presence(self) -> Contributions:
        """This node's connections per (channel, user), for a resync."""

    def local_infos(self) -> dict[tuple[str, str], str]:
        """The infos (:class:`PresenceEvent` ``info``) of this node's members, for a resync."""

    def on_connection_change(self, connected: bool) -> None:
        """The broker lost its connection or its registration (False), or it is back,
        resynced, and the cluster has settled (True): every node seen before has
        published its presence again, or the broker's hold passed."""


class Broker(ABC):
    """One node's link to the other nodes. See the module docstring for the contract."""

    node_id: str = ""
    stats: BrokerStats

    @property
    def connected(self) -> bool:
        return self.stats.connected

    @abstractmethod
    async def start(self, node_id: str, listener: BrokerListener) -> None:
        """Join the cluster as ``node_id``; never raises because the backend is down."""

    @abstractmethod
    async def stop(self) -> None:
        """Withdraw this node's presence (leave events) and disconnect. Idempotent."""

    @abstractmethod
    async def crash(self) -> None:
        """Stop as if the process was killed: no cleanup; the others reap this node."""

    @abstractmethod
    def publish(self, envelope: Envelope) -> None:
        """Send ``envelope`` to the nodes subscribed to its channel, in call order."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Receive envelopes for ``channel``; returns once they will be delivered."""

    @abstractmethod
    def unsubscribe(self, channel: str) -> None:
        """Stop receiving envelopes for ``channel``."""

    @abstractmethod
    def presence_change(self, channel: str, user: str, delta: int, *, info: str = "",
                        reason: str = "", changed: str = "") -> Awaitable[None]:
        """Add (+1) or remove (-1) a connection of ``user`` on ``channel``, in call order;
        with ``delta=0`` change the member's ``info`` (``changed``: its fields).

        ``info``: the member's info (:class:`PresenceEvent`), kept cluster-wide;
        ``reason``: why it leaves, carried by the leave. Returns at once; the
        awaitable completes when the change is applied (or deferred to the next
        resync because the backend is unreachable).
        """

    @abstractmethod
    def publish_numbered(self, channel: str, text: str, *, size: int, ttl: float | None,
                         exclude: str = "") -> bool:
        """Number ``text`` (next offset, epoch), keep it and send it as a ``kind="h"``
        envelope to every node subscribed to ``channel``, this one included, in call order.

        ``size`` and ``ttl`` are the channel's history limits. Returns False, without
        sending anything, when the backend is unreachable (the caller delivers locally).
        """

    @abstractmethod
    async def history_since(self, channel: str, offset: int, *,
                            ttl: float | None) -> HistoryRead | None:
        """The channel's position and its retained messages after ``offset`` (-1: none),
        messages older than ``ttl`` left out; None when the backend is unreachable."""

    @abstractmethod
    async def presence_snapshot(self, channel: str) -> tuple[int, dict[str, int]] | None:
        """``(version, {user: connections})`` cluster-wide, or None when unreachable."""

    async def presence_table(self, channel: str) -> PresenceTable | None:
        """The channel's presence with the members' infos, or None when unreachable
        (a broker that keeps no infos: :meth:`presence_snapshot` with none)."""
        snapshot = await self.presence_snapshot(channel)
        return None if snapshot is None else PresenceTable(snapshot[0], snapshot[1], {})

    @abstractmethod
    async def cluster_channels(self) -> dict[str, dict[str, int]] | None:
        """Every channel with members anywhere: ``{channel: {user: connections}}``."""

    @abstractmethod
    async def nodes(self) -> list[str] | None:
        """Ids of the nodes currently alive (heartbeat not expired)."""

"""The in-memory broker: several nodes in one process, sharing one InMemoryBus.

``bus = InMemoryBus()`` then ``serve(broker=bus)`` twice gives two servers (two
nodes) in one kernel that behave like two processes on Redis: envelopes are
delivered on a later event-loop turn, presence is a cluster-wide table with
per-node contributions, a history channel's offsets, epoch and capped history
live on the bus (:class:`ChannelHistory`), and a node that stops heartbeating
(see :meth:`MemoryBroker.crash`) is reaped by the others after ``node_ttl``.

With one node on the bus nothing is sent anywhere: a publish with no other node
subscribed to the channel returns at once. (Without ``broker=...`` a server has
no node at all, which is cheaper still.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable

from realtime_lab.broker.base import (
    HISTORY,
    PRESENCE,
    Broker,
    BrokerListener,
    BrokerStats,
    Contributions,
    Envelope,
    HistoryRead,
    PresenceTable,
    presence_event,
)
from realtime_lab.core.backplane import numbered_text


class ChannelHistory:
    """One channel's offsets, epoch and capped history on the bus (Redis: ``hm``/``hl``)."""

    __slots__ = ("epoch", "items", "offset")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)
        self.offset = 0
        self.items: deque[tuple[int, float, str]] = deque()

    def append(self, text: str, now: float, size: int, ttl: float | None) -> str:
        """Number ``text``, keep it within ``size`` and ``ttl``; return the numbered text."""
        self.offset += 1
        full = numbered_text(text, self.offset, self.epoch)
        self.items.append((self.offset, now, full))
        while len(self.items) > size:
            self.items.popleft()
        self._prune(now, ttl)
        return full

    def _prune(self, now: float, ttl: float | None) -> None:
        if ttl is not None:
            while self.items and now - self.items[0][1] > ttl:
                self.items.popleft()

    def read(self, offset: int, now: float, ttl: float | None) -> HistoryRead:
        self._prune(now, ttl)
        first = self.items[0][0] if self.items else self.offset + 1
        texts = [t for off, _, t in self.items if off > offset] if offset >= 0 else []
        return HistoryRead(self.epoch, self.offset, first, texts)


class InMemoryBus:
    """The shared medium of the nodes of one process (a stand-in for Redis)."""

    def __init__(self, *, node_ttl: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if node_ttl <= 0:
            raise ValueError(f"node_ttl must be > 0, got {node_ttl!r}")
        self.node_ttl = node_ttl
        self.clock = clock
        self.brokers: dict[str, MemoryBroker] = {}
        self.subscriptions: dict[str, set[str]] = {}
        self.members: dict[str, dict[str, int]] = {}
        #: channel -> user -> the member's info (PresenceEvent.info), as Redis ``pi``
        self.infos: dict[str, dict[str, str]] = {}
        self.versions: dict[str, int] = {}
        self.contributions: dict[str, Contributions] = {}
        self.beats: dict[str, float] = {}
        self.histories: dict[str, ChannelHistory] = {}

    def broker(self) -> MemoryBroker:
        """A new node's broker on this bus."""
        return MemoryBroker(self)

    # ------------------------------------------------------------------ delivery

    def history(self, channel: str) -> ChannelHistory:
        history = self.histories.get(channel)
        if history is None:
            history = self.histories[channel] = ChannelHistory()
        return history

    def deliver(self, envelope: Envelope, *, skip: str | None = None) -> int:
        """Queue ``envelope`` for every node subscribed to its channel but ``skip``."""
        nodes = self.subscriptions.get(envelope.channel)
        if not nodes:
            return 0
        loop = asyncio.get_running_loop()
        sent = 0
        for node in nodes:
            broker = self.brokers.get(node)
            if broker is not None and node != skip:
                loop.call_soon(broker.receive, envelope)
                sent += 1
        return sent

    # ------------------------------------------------------------------ presence

    def change(self, node: str, channel: str, user: str, delta: int, *, info: str = "",
               reason: str = "", changed: str = "") -> None:
        """Apply one connection change (or, ``delta=0``, an info change) atomically;
        announce what changed, numbered with the channel's version."""
        contrib = self.contributions.setdefault(node, {})
        key = (channel, user)
        current = contrib.get(key, 0)
        new = max(current + delta, 0)
        effective = new - current
        members = self.members.get(channel, {})
        infos = self.infos.setdefault(channel, {})
        if effective == 0:
            if delta != 0 or not info or members.get(user, 0) <= 0 or infos.get(user) == info:
                return
            infos[user] = info
            before = after = members[user]
        else:
            if new:
                contrib[key] = new
            else:
                contrib.pop(key, None)
            members = self.members.setdefault(channel, {})
            before = members.get(user, 0)
            after = before + effective
            if after > 0:
                members[user] = after
                if info:
                    infos[user] = info
            else:
                members.pop(user, None)
                infos.pop(user, None)
                if not members:
                    del self.members[channel]
        if not infos:
            self.infos.pop(channel, None)
        version = self.versions[channel] = self.versions.get(channel, 0) + 1
        ev = presence_event(user, before, after, version, info=infos.get(user, ""),
                            reason=reason, changed=changed)
        self.deliver(Envelope(node, 0, channel, PRESENCE, ev.to_payload()))

    def withdraw(self, node: str) -> None:
        """Remove every connection of ``node`` (leave events where a user is gone)."""
        for (channel, user), count in list(self.contributions.get(node, {}).items()):
            self.change(node, channel, user, -count)
        self.contributions.pop(node, None)
        self.beats.pop(node, None)

    def reap(self) -> list[str]:
        """Withdraw the nodes whose heartbeat is older than ``node_ttl``."""
        now = self.clock()
        dead = [n for n, beat in self.beats.items() if now - beat > self.node_ttl]
        for node in dead:
            self.withdraw(node)
        return dead


def _done() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class MemoryBroker(Broker):
    """One node's broker on an :class:`InMemoryBus`."""

    def __init__(self, bus: InMemoryBus | None = None) -> None:
        self.bus = bus or InMemoryBus()
        self.stats = BrokerStats()
        self.listener: BrokerListener | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._alive = False

    async def start(self, node_id: str, listener: BrokerListener) -> None:
        self.node_id = node_id
        self.listener = listener
        self.bus.brokers[node_id] = self
        self.bus.beats[node_id] = self.bus.clock()
        self._alive = True
        self.stats.connected = True
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        period = self.bus.node_ttl / 3
        while True:
            await asyncio.sleep(period)
            self.bus.beats[self.node_id] = self.bus.clock()
            self.stats.reaped_nodes += len(self.bus.reap())

    async def _detach(self) -> None:
        self._alive = False
        self.stats.connected = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        self.bus.brokers.pop(self.node_id, None)
        for nodes in self.bus.subscriptions.values():
            nodes.discard(self.node_id)

    async def stop(self) -> None:
        if not self._alive:
            return
        self.bus.withdraw(self.node_id)
        await self._detach()

    async def crash(self) -> None:
        if self._alive:
            await self._detach()  # contributions and the last beat stay until reaped

    def publish(self, envelope: Envelope) -> None:
        if not self._alive:
            self.stats.dropped_out += 1
            return
        if self.bus.deliver(envelope, skip=self.node_id):
            self.stats.published += 1

    def publish_numbered(self, channel: str, text: str, *, size: int, ttl: float | None,
                         exclude: str = "") -> bool:
        if not self._alive:
            return False
        history = self.bus.history(channel)
        full = history.append(text, self.bus.clock(), size, ttl)
        payload = f"{history.epoch}\n{exclude}\n{full}"
        self.bus.deliver(Envelope(self.node_id, history.offset, channel, HISTORY, payload))
        self.stats.published += 1
        return True

    async def history_since(self, channel: str, offset: int, *,
                            ttl: float | None) -> HistoryRead | None:
        if not self._alive:
            return None
        return self.bus.history(channel).read(offset, self.bus.clock(), ttl)

    def receive(self, envelope: Envelope) -> None:
        if self._alive and self.listener is not None:
            self.stats.received += 1
            self.listener.on_envelope(envelope)

    async def subscribe(self, channel: str) -> None:
        if self._alive:
            self.bus.subscriptions.setdefault(channel, set()).add(self.node_id)

    def unsubscribe(self, channel: str) -> None:
        nodes = self.bus.subscriptions.get(channel)
        if nodes is not None:
            nodes.discard(self.node_id)
            if not nodes:
                del self.bus.subscriptions[channel]

    def presence_change(self, channel: str, user: str, delta: int, *, info: str = "",
                        reason: str = "", changed: str = "") -> Awaitable[None]:
        if self._alive:
            self.stats.presence_ops += 1
            self.bus.change(self.node_id, channel, user, delta, info=info, reason=reason,
                            changed=changed)
        return _done()

    async def presence_snapshot(self, channel: str) -> tuple[int, dict[str, int]] | None:
        return self.bus.versions.get(channel, 0), dict(self.bus.members.get(channel, {}))

    async def presence_table(self, channel: str) -> PresenceTable | None:
        return PresenceTable(self.bus.versions.get(channel, 0),
                             dict(self.bus.members.get(channel, {})),
                             dict(self.bus.infos.get(channel, {})))

    async def cluster_channels(self) -> dict[str, dict[str, int]] | None:
        return {name: dict(members) for name, members in self.bus.members.items()}

    async def nodes(self) -> list[str] | None:
        now = self.bus.clock()
        return sorted(n for n, beat in self.bus.beats.items() if now - beat <= self.bus.node_ttl)

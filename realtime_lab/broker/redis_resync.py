"""How a Redis node publishes its presence again and waits for the cluster to settle.

After the link to Redis comes back (or the node finds its own registration
expired: a long pause, or Redis flushed), the node replaces its presence
contributions with its local state (the ``SYNC`` script). If Redis came back
empty, the other nodes' members are missing from it until each of them has done
the same; a node that showed its clients the members at that moment would
announce leaves (and, a moment later, joins) that never happened.

So the node holds its presence announcements (broker/presence_link.py) until
every node it saw alive before (at its last heartbeat, or publishing presence
since) is registered again, which it is only after its own ``SYNC``, or until
``resync_hold`` seconds passed (a node that does not come back within the hold is
gone: its members leave, as the reaper would decide anyway). Then
``on_connection_change(True)`` tells the node to reload and show only what
really changed. docs/scaling.md, "When Redis comes back empty".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from realtime_lab.broker.base import BrokerListener, BrokerStats

log = logging.getLogger("realtime_lab.broker")

#: Seconds between two looks for the nodes a settle waits for.
PEER_POLL = 0.05


class RedisBroker(Protocol):
    """What the resync uses of its ``realtime_lab.broker.redis.RedisBroker`` (typed here
    so that this module does not import the broker that owns it)."""

    node_id: str
    namespace: str
    node_ttl: float
    resync_hold: float
    listener: BrokerListener | None
    stats: BrokerStats
    _shas: dict[str, str]

    def _key(self, kind: str, name: str) -> str: ...
    def _lost(self, exc: BaseException) -> None: ...
    async def _drain(self) -> None: ...
    async def nodes(self) -> list[str] | None: ...


class PresenceResync:
    """One Redis node's presence resynchronisation: its peers, the sync, the settle."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        #: The other nodes as last seen alive (heartbeat) or publishing presence.
        self.peers: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def settling(self) -> bool:
        return self._task is not None and not self._task.done()

    def seen(self, node: str) -> None:
        """A presence envelope from ``node``: its members are part of the cluster's."""
        if node != self.broker.node_id:
            self.peers.add(node)

    def beat(self, live: Iterable[str]) -> None:
        """The live nodes, as the heartbeat read them (kept while a settle waits)."""
        if not self.settling:
            self.peers = set(live) - {self.broker.node_id}

    async def sync(self, client: Any) -> list[str]:
        """Replace this node's contributions with its local state; return the live nodes."""
        broker = self.broker
        assert broker.listener is not None
        flat: list[Any] = []
        infos = broker.listener.local_infos()
        for (channel, user), count in broker.listener.local_presence().items():
            flat += [channel, user, count, infos.get((channel, user), "")]
        live = await client.evalsha(broker._shas["sync"], 0, broker.namespace, broker.node_id,
                                    int(broker.node_ttl * 1000), *flat)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in live]

    async def rejoin(self, client: Any) -> None:
        """This node found its registration expired (a long pause, or Redis flushed):
        hold, publish its presence again, settle (the others may have lost theirs)."""
        broker = self.broker
        assert broker.listener is not None
        broker.listener.on_connection_change(False)
        try:
            await broker._drain()
            live = await self.sync(client)
        except Exception as exc:  # noqa: BLE001
            broker._lost(exc)
            return
        broker.stats.resyncs += 1
        self.settle(client, live)

    def settle(self, client: Any, live: list[str]) -> None:
        """Tell the node the cluster has settled: now, when every peer is registered,
        or once they are (at most ``resync_hold`` seconds from now)."""
        self.cancel()
        missing = self.peers - set(live)
        if not missing:
            self.peers = set(live) - {self.broker.node_id}
            self._settled()
            return
        self._task = asyncio.get_running_loop().create_task(self._wait(client, missing))

    def cancel(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def _wait(self, client: Any, missing: set[str]) -> None:
        broker = self.broker
        loop = asyncio.get_running_loop()
        deadline = loop.time() + broker.resync_hold
        try:
            while missing and loop.time() < deadline:
                # polled: each peer re-registers once; the wait is bounded by resync_hold
                await asyncio.sleep(min(PEER_POLL, max(0.0, deadline - loop.time())))
                ordered = sorted(missing)
                pipe = client.pipeline(transaction=False)
                for node in ordered:
                    pipe.exists(broker._key("node", node))
                back = await pipe.execute()
                missing -= {n for n, b in zip(ordered, back, strict=True) if b}
        except Exception as exc:  # noqa: BLE001 - lost again: the next reconnect settles
            broker._lost(exc)
            return
        live = await broker.nodes()
        if live is None:  # lost again (nodes() noted it)
            return
        if missing:
            log.warning("redis broker: node(s) %s did not publish their presence again within "
                        "resync_hold=%gs; their members leave", ", ".join(sorted(missing)),
                        broker.resync_hold)
        self.peers = set(live) - {broker.node_id}
        self._settled()

    def _settled(self) -> None:
        assert self.broker.listener is not None
        self.broker.listener.on_connection_change(True)

"""The Redis broker: nodes in several processes or machines share one Redis.

``serve(broker="redis://HOST:PORT/0")`` (needs ``pip install
'realtime_lab[redis]'``). What lives in Redis (``ns`` is the namespace, "rl"):

=====================  =====================================================
``ns:ch:{channel}``    pub/sub channel of a channel's envelopes; a node
                       subscribes only while it has local subscribers
``ns:pc:{channel}``    hash user -> connections, cluster-wide
``ns:pi:{channel}``    hash user -> the member's info (state, metadata: JSON)
``ns:pv:{channel}``    version of those hashes (INCR on each change)
``ns:chans``           set of channels with at least one member
``ns:pn:{node}``       hash "channel\\nuser" -> connections of one node
``ns:node:{node}``     heartbeat key, expires after ``node_ttl``
``ns:nodes``           set of node ids that registered
``ns:hm:{channel}``    hash of a history channel: ``e`` epoch, ``o`` offset
``ns:hl:{channel}``    list of its last ``size`` messages, ``"ms\\ntext"``,
                       expiring ``ttl`` after the last publish
=====================  =====================================================

A publish to a history channel runs one Lua script (``HPUB``) that increments
the offset, appends the numbered message to the capped list and publishes it,
so offsets follow the order in which Redis executes the publishes and every
node, the publisher's included, delivers in that order.

Every presence change runs one Lua script that updates ``pn``, ``pc``, ``pv``
and publishes the presence envelope atomically, so join and leave are decided
once for the whole cluster. Every node refreshes its heartbeat key each
``node_ttl / 3`` and, in the same script, withdraws the nodes whose key expired
(leave events included): a node killed with SIGKILL disappears from presence
within ``node_ttl + node_ttl / 3``.

Outbound envelopes and presence changes go through one ordered outbox, sent in
pipelines by one writer task, so one node's publishes reach Redis (and every
other node) in order. When Redis is unreachable the broker counts every
envelope it cannot send in ``stats.dropped_out``, keeps delivering locally,
reconnects with exponential backoff and jitter, resubscribes, replaces its
presence contributions with the local state and, once the cluster has settled,
tells the node (redis_resync.py; docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable
from typing import Any

from realtime_lab.broker.base import (
    PRESENCE,
    Broker,
    BrokerListener,
    BrokerStats,
    Envelope,
    HistoryRead,
    PresenceTable,
)
from realtime_lab.broker.redis_resync import PresenceResync
from realtime_lab.broker.redis_scripts import BEAT, CHANGE, HPUB, HREAD, SYNC, WITHDRAW
from realtime_lab.errors import require

log = logging.getLogger("realtime_lab.broker")

_Item = tuple[Any, ...]


class RedisBroker(Broker):
    """A node's link to the others through Redis (``redis.asyncio``).

    Args:
        url: ``redis://HOST:PORT/DB``.
        namespace: prefix of every key and pub/sub channel.
        node_ttl: seconds after which a node that stopped heartbeating is reaped.
        op_timeout: seconds a Redis command may take before the link counts as lost.
        backoff_initial, backoff_max: reconnect delays (doubling, with jitter).
        max_outbox: envelopes waiting to be written; more are dropped and counted.
        resync_hold: after a reconnect (or finding this node expired), the longest
            wait for the nodes seen alive before to publish their presence again
            (None: ``node_ttl``, after which a silent node is reaped anyway).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, namespace: str = "rl",
                 node_ttl: float = 10.0, op_timeout: float = 2.0,
                 backoff_initial: float = 0.05, backoff_max: float = 2.0,
                 max_outbox: int = 100_000, resync_hold: float | None = None) -> None:
        require("redis.asyncio", "redis")
        if node_ttl <= 0:
            raise ValueError(f"node_ttl must be > 0, got {node_ttl!r}")
        if resync_hold is not None and not resync_hold >= 0:
            raise ValueError(f"resync_hold must be seconds >= 0 or None, got {resync_hold!r}")
        self.resync_hold = node_ttl if resync_hold is None else resync_hold
        self.url = url
        self.namespace = namespace
        self.node_ttl = node_ttl
        self.op_timeout = op_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_outbox = max_outbox
        self.stats = BrokerStats()
        self.listener: BrokerListener | None = None
        self._channels: set[str] = set()
        self._client: Any = None
        self._ps_client: Any = None
        self._pubsub: Any = None
        self._shas: dict[str, str] = {}
        self._outbox: list[_Item] = []
        self._accepting = False
        self._wake = asyncio.Event()
        self._sub_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._ps_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._epoch = secrets.token_hex(4)
        #: Presence resynchronisation: SYNC, then the wait for the peers (redis_resync.py).
        self.resync = PresenceResync(self)

    def __repr__(self) -> str:
        return f"<RedisBroker {self.url} node={self.node_id} connected={self.connected}>"

    # ------------------------------------------------------------------ keys

    def _key(self, kind: str, name: str) -> str:
        return f"{self.namespace}:{kind}:{name}"

    def _ch(self, channel: str) -> bytes:
        return self._key("ch", channel).encode()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, node_id: str, listener: BrokerListener) -> None:
        self.node_id = node_id
        self.listener = listener
        try:
            await self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure: retry in the background
            log.warning("redis broker %s unreachable (%s); retrying in the background",
                        self.url, exc)
            await self._teardown()
            self._spawn("reconnect", self._reconnect_loop())
        self._spawn("heartbeat", self._heartbeat())

    def _spawn(self, name: str, coro: Any) -> None:
        old = self._tasks.get(name)
        if old is not None and not old.done():
            old.cancel()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[name] = task

    def _make_client(self, *, timeout: float | None) -> Any:
        aioredis: Any = require("redis.asyncio", "redis")
        retry_mod: Any = require("redis.asyncio.retry", "redis")
        backoff: Any = require("redis.backoff", "redis")
        return aioredis.Redis.from_url(
            self.url, retry=retry_mod.Retry(backoff.NoBackoff(), 0),
            socket_connect_timeout=self.op_timeout, socket_timeout=timeout,
            health_check_interval=0)

    async def _connect(self) -> None:
        """Connect, subscribe, sync presence, start reading and writing."""
        client = self._client = self._make_client(timeout=self.op_timeout)
        await client.ping()
        self._epoch = secrets.token_hex(4)  # a new channel history's epoch (if none in Redis)
        for name, script in (("change", CHANGE), ("sync", SYNC), ("beat", BEAT),
                             ("withdraw", WITHDRAW), ("hpub", HPUB), ("hread", HREAD)):
            self._shas[name] = await client.script_load(script)
        self._ps_client = self._make_client(timeout=None)
        pubsub = self._pubsub = self._ps_client.pubsub()
        await pubsub.subscribe(self._key("ctl", self.node_id))
        self._spawn("reader", self._reader(pubsub))
        waits = [self._send_subscribe(name) for name in sorted(self._channels)]
        if waits:
            await asyncio.gather(*waits)
        self._accepting = True  # changes from now on are queued behind the sync
        live = await self.resync.sync(client)
        self.stats.resyncs += 1
        self.stats.connected = True
        self._spawn("writer", self._writer(client))
        self._wake.set()
        self.resync.settle(client, live)

    async def _teardown(self) -> None:
        self._accepting = False
        self.stats.connected = False
        self.resync.cancel()
        for name in ("reader", "writer"):
            task = self._tasks.pop(name, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for client in (self._client, self._ps_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._client = self._ps_client = self._pubsub = None
        for waiters in self._sub_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._sub_waiters.clear()
        self._drop_outbox()

    def _drop_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        for item in outbox:
            if item[0] in ("m", "h"):
                self.stats.dropped_out += 1
            else:
                if item[1] is not None:
                    self.stats.presence_deferred += 1
                fut = item[4]
                if not fut.done():
                    fut.set_result(None)

    def _lost(self, exc: BaseException) -> None:
        """The connection failed: count what is lost and reconnect in the background."""
        if self._closed or not self.stats.connected:
            return
        log.warning("redis broker %s lost (%s: %s); local delivery continues, cross-node "
                    "messages are dropped and counted until it is back", self.url,
                    type(exc).__name__, exc)
        self.stats.connected = False
        self._accepting = False
        self._drop_outbox()
        if self.listener is not None:
            self.listener.on_connection_change(False)
        self._spawn("reconnect", self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        await self._teardown()
        delay = self.backoff_initial
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # backoff, not a sync wait
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - keep trying whatever the failure
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("redis reconnect failed: %s", exc)
                await self._teardown()
                delay = min(delay * 2, self.backoff_max)
                continue
            self.stats.reconnects += 1
            log.warning("redis broker %s reconnected and resynced", self.url)
            return

    async def stop(self) -> None:
        if self._closed:
            return
        if self.stats.connected and self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), self.op_timeout)
                await asyncio.wait_for(self._client.evalsha(
                    self._shas["withdraw"], 0, self.namespace, self.node_id), self.op_timeout)
        await self.crash()

    async def _drain(self) -> None:
        while self._outbox and self.stats.connected:
            fut = asyncio.get_running_loop().create_future()
            self._outbox.append(("p", None, None, 0, fut, "", "", ""))
            self._wake.set()
            await fut

    async def crash(self) -> None:
        self._closed = True
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
        await self._teardown()

    # ------------------------------------------------------------------ outbound

    def _enqueue(self, item: _Item) -> None:
        self._outbox.append(item)
        self._wake.set()

    def publish(self, envelope: Envelope) -> None:
        if not self._accepting or len(self._outbox) >= self.max_outbox:
            self.stats.dropped_out += 1
            return
        self._enqueue(("m", self._ch(envelope.channel), envelope.encode()))

    def publish_numbered(self, channel: str, text: str, *, size: int, ttl: float | None,
                         exclude: str = "") -> bool:
        if not self._accepting or len(self._outbox) >= self.max_outbox:
            return False
        self._enqueue(("h", channel, text, size, int(ttl * 1000) if ttl else 0, exclude))
        return True

    def presence_change(self, channel: str, user: str, delta: int, *, info: str = "",
                        reason: str = "", changed: str = "") -> Awaitable[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._accepting:
            self.stats.presence_deferred += 1  # the resync after reconnecting applies it
            fut.set_result(None)
        else:
            self._enqueue(("p", channel, user, delta, fut, info, reason, changed))
        return fut

    async def _writer(self, client: Any) -> None:
        sha, hpub = self._shas["change"], self._shas["hpub"]
        ns, node = self.namespace, self.node_id
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch, self._outbox = self._outbox[:2000], self._outbox[2000:]
                pipe = client.pipeline(transaction=False)
                for item in batch:
                    if item[0] == "m":
                        pipe.publish(item[1], item[2])
                    elif item[0] == "h":
                        pipe.evalsha(hpub, 0, ns, node, *item[1:5], self._epoch, item[5])
                    elif item[1] is not None:
                        pipe.evalsha(sha, 0, ns, node, item[1], item[2], item[3], *item[5:8])
                try:
                    await pipe.execute()
                except asyncio.CancelledError:  # torn down mid-write: count, then stop
                    self._outbox = batch + self._outbox
                    self._drop_outbox()
                    raise
                except Exception as exc:  # noqa: BLE001 - connection or script failure
                    self._outbox = batch + self._outbox
                    if self.stats.connected:
                        self._lost(exc)  # counts and empties the outbox
                    else:
                        self._drop_outbox()
                    return
                for item in batch:
                    if item[0] in ("m", "h"):
                        self.stats.published += 1
                    else:
                        if item[1] is not None:
                            self.stats.presence_ops += 1
                        if not item[4].done():
                            item[4].set_result(None)

    # ------------------------------------------------------------------ inbound

    async def _reader(self, pubsub: Any) -> None:
        listener = self.listener
        assert listener is not None
        try:
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                mtype = msg["type"]
                if mtype == "message":
                    try:
                        envelope = Envelope.decode(msg["data"])
                    except (ValueError, UnicodeDecodeError):
                        self.stats.dropped_in += 1
                        continue
                    self.stats.received += 1
                    if envelope.kind == PRESENCE:
                        self.resync.seen(envelope.origin)
                    listener.on_envelope(envelope)
                elif mtype == "subscribe":
                    for fut in self._sub_waiters.pop(msg["channel"], []):
                        if not fut.done():
                            fut.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection lost
            self._lost(exc)

    async def _send_subscribe(self, channel: str) -> None:
        key = self._ch(channel)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sub_waiters.setdefault(key, []).append(fut)
        async with self._ps_lock:
            await self._pubsub.subscribe(key)
        await asyncio.wait_for(fut, self.op_timeout)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if not self.stats.connected or self._pubsub is None:
            return  # the reconnect subscribes to every channel in self._channels
        try:
            await self._send_subscribe(channel)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)

    def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self.stats.connected and self._pubsub is not None:
            asyncio.get_running_loop().create_task(self._send_unsubscribe(self._pubsub, channel))

    async def _send_unsubscribe(self, pubsub: Any, channel: str) -> None:
        with contextlib.suppress(Exception):
            async with self._ps_lock:
                if channel not in self._channels:
                    await pubsub.unsubscribe(self._ch(channel))

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat(self) -> None:
        period = self.node_ttl / 3
        while not self._closed:
            await asyncio.sleep(period)  # the heartbeat period, not a synchronisation
            client = self._client
            if not self.stats.connected or client is None:
                continue
            try:
                alive, reaped, live = await client.evalsha(
                    self._shas["beat"], 0, self.namespace, self.node_id,
                    int(self.node_ttl * 1000))
            except Exception as exc:  # noqa: BLE001
                self._lost(exc)
                continue
            self.stats.reaped_nodes += int(reaped)
            if not int(alive):  # this node expired (a long pause, or Redis was flushed):
                # the others may have too, so wait for the peers known before this beat
                log.warning("node %s had expired in redis; resyncing its presence", self.node_id)
                await self.resync.rejoin(client)
            else:
                self.resync.beat([n.decode() for n in live])

    # ------------------------------------------------------------------ reads

    async def history_since(self, channel: str, offset: int, *,
                            ttl: float | None) -> HistoryRead | None:
        client = self._client
        if not self.stats.connected or client is None:
            return None
        try:
            epoch, top, first, now, items = await client.evalsha(
                self._shas["hread"], 0, self.namespace, channel, offset, self._epoch)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None
        top, first = int(top), int(first)
        texts = []
        expired = 0
        cutoff = int(now) - int(ttl * 1000) if ttl else None
        for item in items:
            stamp, text = item.decode().split("\n", 1)
            if cutoff is not None and int(stamp) < cutoff:
                expired += 1  # older than ttl: as good as trimmed
                continue
            texts.append(text)
        if expired:
            first = max(first, offset + 1) + expired
        return HistoryRead(epoch.decode(), top, first, texts)

    async def presence_snapshot(self, channel: str) -> tuple[int, dict[str, int]] | None:
        table = await self.presence_table(channel)
        return None if table is None else (table.version, table.counts)

    async def presence_table(self, channel: str) -> PresenceTable | None:
        client = self._client
        if not self.stats.connected or client is None:
            return None
        try:
            pipe = client.pipeline(transaction=True)
            pipe.get(self._key("pv", channel))
            pipe.hgetall(self._key("pc", channel))
            pipe.hgetall(self._key("pi", channel))
            version, members, infos = await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None
        return PresenceTable(int(version or 0), {u.decode(): int(n) for u, n in members.items()},
                             {u.decode(): i.decode() for u, i in infos.items()})

    async def cluster_channels(self) -> dict[str, dict[str, int]] | None:
        client = self._client
        if not self.stats.connected or client is None:
            return None
        try:
            names = sorted(n.decode() for n in await client.smembers(f"{self.namespace}:chans"))
            pipe = client.pipeline(transaction=True)
            for name in names:
                pipe.hgetall(self._key("pc", name))
            results = await pipe.execute() if names else []
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None
        return {name: {u.decode(): int(n) for u, n in members.items()}
                for name, members in zip(names, results, strict=True) if members}

    async def nodes(self) -> list[str] | None:
        client = self._client
        if not self.stats.connected or client is None:
            return None
        try:
            ids = sorted(n.decode() for n in await client.smembers(f"{self.namespace}:nodes"))
            pipe = client.pipeline(transaction=False)
            for node in ids:
                pipe.exists(self._key("node", node))
            alive = await pipe.execute() if ids else []
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None
        return [n for n, a in zip(ids, alive, strict=True) if a]

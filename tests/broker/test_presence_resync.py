"""Presence across a Redis restart that loses everything (issue 13, point 11).

Server processes on a real redis-server (started by the test, no persistence).
Redis is killed and started again empty; each node reconnects on its own backoff
and publishes its members again. Before the fix the node that came back first
re-sent ``presence_state`` without the other node's members, and a moment later
they re-joined: every page showed a leave and a join that never happened. Now each
node holds its announcements until every node it knew has published its members
again (at most ``resync_hold``), then sends only the real difference.

``RL_REPEAT=20`` runs each scenario 20 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

import realtime_lab
from realtime_lab import Client
from realtime_lab.client.presence import PresenceView

from .conftest import NodeFactory, NodeProcess, RedisProcess, eventually

TTL = 1.5
HOLD = 6.0  # longer than any node's reconnect backoff (backoff_max 2 s) after the restart
OUTAGE = 1.0  # seconds Redis stays down: the nodes' backoffs spread their reconnects
REPEAT = range(int(os.environ.get("RL_REPEAT", "1")))


def _url(redis: RedisProcess, hold: float = HOLD) -> str:
    return f"{redis.url}?node_ttl={TTL}&resync_hold={hold}"


async def cluster(node: NodeProcess) -> dict[str, Any]:
    body = (await AsyncHTTPClient().fetch(node.http_url + "/api/cluster")).body
    return json.loads(body)  # type: ignore[no-any-return]


class Watch:
    """A client that keeps every presence message it receives, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []
        self.since = 0
        #: The members as the messages read so far say (not the client's own view,
        #: which may be a message ahead: a mark() taken then would leave it out).
        self.view = PresenceView()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.client.recv()
            if msg["type"].startswith("presence_"):
                self.messages.append(msg)
                self.view.apply(msg)

    def members(self) -> list[str]:
        return self.view.members("room")

    def mark(self) -> None:
        """From now on (the outage begins) :meth:`history` reports."""
        self.since = len(self.messages)

    def history(self, user: str) -> list[str]:
        """What this client was told about ``user`` since :meth:`mark` (or since its
        first list, for a client that came later): "join" when it appeared, "leave"
        when it disappeared."""
        view = PresenceView()
        out: list[str] = []
        for i, msg in enumerate(self.messages):
            complete = "room" in view.channels
            before = user in view.channels.get("room", {})
            view.apply(msg)
            after = user in view.channels.get("room", {})
            if complete and before != after and i >= self.since:
                out.append("join" if after else "leave")
        return out

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()


@contextlib.asynccontextmanager
async def watches() -> AsyncIterator[list[Watch]]:
    made: list[Watch] = []
    try:
        yield made
    finally:
        for w in made:
            await w.close()


async def join(made: list[Watch], node: NodeProcess, user: str) -> Watch:
    client = await realtime_lab.connect(node.url, user=user, reconnect=True)
    await client.subscribe("room")
    made.append(Watch(client))
    return made[-1]


async def outage(redis: RedisProcess, nodes: list[NodeProcess]) -> None:
    """Kill Redis (it keeps nothing); return once every node has noticed."""
    redis.stop()
    for node in nodes:
        await eventually_async(lambda n=node: cluster(n), lambda c: not c["connected"],
                               what="the nodes to notice the outage")


async def eventually_async(fetch: Any, predicate: Any, timeout: float = 10.0,
                           what: str = "condition") -> None:
    """Like ``eventually`` for a condition that needs an await (an HTTP call)."""
    async with asyncio.timeout(timeout):
        while not predicate(await fetch()):
            await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout


@pytest.mark.parametrize("round_", REPEAT)
async def test_redis_restarted_empty_nobody_flaps_and_real_changes_arrive_once(
        redis: RedisProcess, node_process: NodeFactory, round_: int) -> None:
    a, b = await node_process(_url(redis)), await node_process(_url(redis))
    async with watches() as made:
        ada, bob = await join(made, a, "ada"), await join(made, b, "bob")
        cy_a, cy_b = await join(made, a, "cy"), await join(made, b, "cy")  # a tab on each node
        gone = await join(made, a, "gone")  # leaves during the outage
        stayed = [ada, bob, cy_a, cy_b]
        everyone = ["ada", "bob", "cy", "gone"]
        await eventually(lambda: all(w.members() == everyone for w in made),
                         what="everyone to see everyone")
        for w in made:
            w.mark()
        await outage(redis, [a, b])
        await gone.close()  # a real leave and a real join while Redis is down
        made.remove(gone)
        new = await join(made, a, "new")
        await asyncio.sleep(OUTAGE)  # the outage itself, not a synchronisation
        redis.start()
        want = ["ada", "bob", "cy", "new"]
        took = await eventually(lambda: all(w.members() == want for w in made),
                                timeout=HOLD + 10,
                                what="presence to converge after Redis came back empty")
        print(f"\nevery list exact {took:.2f}s after Redis came back empty")
        # a join on each node seen on the other: both have settled (a node shows the
        # broker's events only once it has, in the same diff as what it resynced)
        probes = [await join(made, b, "probe_b"), await join(made, a, "probe_a")]
        await eventually(lambda: all({"probe_a", "probe_b"} <= set(w.members()) for w in made),
                         timeout=HOLD + 10)

        for w in stayed + [new, *probes]:
            for user in ("ada", "bob", "cy"):
                assert w.history(user) == [], (w.client.user, user, w.history(user))
        for w in stayed:
            assert w.history("gone") == ["leave"], w.client.user
            assert w.history("new") == ["join"], w.client.user
        for node in (a, b):
            info = await cluster(node)
            assert info["broker_stats"]["reconnects"] >= 1


@pytest.mark.parametrize("round_", REPEAT)
async def test_a_node_that_does_not_come_back_leaves_after_the_hold(
        redis: RedisProcess, node_process: NodeFactory, round_: int) -> None:
    """The hold is bounded: a node killed while Redis is down never publishes its
    members again; they leave once, about ``resync_hold`` after the others settled
    to wait, and the members of the nodes that came back never flap."""
    hold = 2.5
    a, b, c = [await node_process(_url(redis, hold)) for _ in range(3)]
    async with watches() as made:
        ada, bob = await join(made, a, "ada"), await join(made, b, "bob")
        cora = await join(made, c, "cora")
        await eventually(lambda: all(w.members() == ["ada", "bob", "cora"] for w in made))
        for w in made:
            w.mark()
        await outage(redis, [a, b])
        c.kill()
        await asyncio.sleep(OUTAGE)  # the outage itself, not a synchronisation
        redis.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await eventually(lambda: ada.members() == bob.members() == ["ada", "bob"],
                         timeout=hold + 10, what="cora to leave")
        took = loop.time() - start
        probes = [await join(made, a, "probe_a"), await join(made, b, "probe_b")]
        await eventually(lambda: all({"probe_a", "probe_b"} <= set(w.members()) for w in made
                                     if w is not cora), timeout=hold + 10)
        assert probes[0].history("cora") == probes[1].history("cora") == []
        assert took <= hold + 4.0  # the hold, plus the reconnect backoff (max 2 s)
        for w in (ada, bob):
            assert w.history("cora") == ["leave"]
            assert w.history("ada") == w.history("bob") == []
        made.remove(cora)
        await cora.close()


def flushall(redis: RedisProcess) -> None:
    """FLUSHALL on the running redis-server (the nodes stay connected)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")


@pytest.mark.parametrize("round_", REPEAT)
async def test_redis_flushed_under_connected_nodes_nobody_flaps(
        redis: RedisProcess, node_process: NodeFactory, round_: int) -> None:
    """FLUSHALL without a restart: no link breaks; each node finds its registration
    gone at its next heartbeat (within node_ttl / 3, at different moments) and
    publishes its members again. None of them shows a leave or a join meanwhile."""
    a, b = await node_process(_url(redis)), await node_process(_url(redis))
    async with watches() as made:
        ada, bob = await join(made, a, "ada"), await join(made, b, "bob")
        await eventually(lambda: all(w.members() == ["ada", "bob"] for w in made))
        settled = [(await cluster(n))["node_stats"]["resyncs"] for n in (a, b)]
        for w in made:
            w.mark()
        flushall(redis)
        for node, before in zip((a, b), settled, strict=True):
            await eventually_async(lambda n=node: cluster(n),
                                   lambda c, s=before: c["node_stats"]["resyncs"] > s,
                                   timeout=HOLD + 10, what="the nodes to resync and settle")
        probes = [await join(made, a, "probe_a"), await join(made, b, "probe_b")]
        await eventually(lambda: all({"probe_a", "probe_b"} <= set(w.members()) for w in made),
                         timeout=10)
        for w in (ada, bob, *probes):
            assert w.history("ada") == w.history("bob") == [], w.client.user

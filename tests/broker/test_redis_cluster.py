"""Server processes linked by a real redis-server: delivery, presence, SIGKILL, outage."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

import realtime_lab
from realtime_lab import Client, LabServer
from realtime_lab.broker.redis import RedisBroker

from .conftest import NodeFactory, RedisProcess, eventually
from .conftest import presence_diffs as _diffs

TTL = 1.5


def _url(redis: RedisProcess) -> str:
    return f"{redis.url}?node_ttl={TTL}"


async def _channels(http_url: str) -> dict[str, dict[str, Any]]:
    body = json.loads((await AsyncHTTPClient().fetch(http_url + "/api/channels")).body)
    return {c["name"]: c for c in body["channels"]}




async def test_two_processes_deliver_both_ways(redis: RedisProcess,
                                               node_process: NodeFactory) -> None:
    a, b = [await node_process(_url(redis)) for _ in range(2)]
    ada = await realtime_lab.connect(a.url, user="ada")
    bob = await realtime_lab.connect(b.url, user="bob")
    try:
        await ada.subscribe("room")
        await bob.subscribe("room")
        assert bob.presence.members("room") == ["ada", "bob"]
        await eventually(lambda: ada.presence.members("room") == ["ada", "bob"])
        for i in range(20):
            await ada.publish("room", {"from": "a", "i": i})
            await bob.publish("room", {"from": "b", "i": i})
        for client in (ada, bob):
            seen: dict[str, list[int]] = {"a": [], "b": []}
            for _ in range(40):
                data = (await client.recv_message("room", timeout=5))["data"]
                seen[data["from"]].append(data["i"])
            assert seen == {"a": list(range(20)), "b": list(range(20))}
        for node in (a, b):
            room = (await _channels(node.http_url))["room"]
            assert (room["subscribers"], room["members"], room["local_subscribers"]) == (2, 2, 1)
    finally:
        await ada.close()
        await bob.close()


async def test_three_processes_multi_tab_join_and_leave_once(
        redis: RedisProcess, node_process: NodeFactory) -> None:
    a, b, c = [await node_process(_url(redis)) for _ in range(3)]
    watcher = await realtime_lab.connect(c.url, user="watcher")
    tabs = [await realtime_lab.connect(node.url, user="ada") for node in (a, b)]
    try:
        await watcher.subscribe("room")
        for tab in tabs:
            await tab.subscribe("room")
        # one member with a tab on each node: its connection count crosses nodes
        await eventually(lambda: watcher.presence.channels.get("room", {}).get("ada")
                         == {"connections": 2})
        room = (await _channels(c.http_url))["room"]
        assert (room["subscribers"], room["members"]) == (3, 2)
        await tabs[0].close()
        room_after_one = (await _channels(b.http_url))["room"]
        await tabs[1].close()
        await eventually(lambda: "ada" not in watcher.presence.members("room"))
        diffs = await _diffs(watcher)
        assert len([d for d in diffs if "ada" in d["joins"]]) == 1
        assert len([d for d in diffs if "ada" in d["leaves"]]) == 1
        assert room_after_one["members"] == 2
    finally:
        await watcher.close()
        for tab in tabs:
            await tab.close()


async def test_sigkilled_node_presence_removed_within_ttl(
        redis: RedisProcess, node_process: NodeFactory) -> None:
    a, b = [await node_process(_url(redis)) for _ in range(2)]
    ada = await realtime_lab.connect(a.url, user="ada")
    bob = await realtime_lab.connect(b.url, user="bob")
    try:
        await ada.subscribe("room")
        await bob.subscribe("room")
        await eventually(lambda: "bob" in ada.presence.members("room"))
        b.kill()
        took = await eventually(lambda: "bob" not in ada.presence.members("room"),
                                timeout=TTL * 3, what="the killed node to be reaped")
        print(f"\npresence converged {took:.2f}s after SIGKILL (node_ttl={TTL}s)")
        assert took <= TTL + TTL / 3 + 0.5
        leaves = [d for d in await _diffs(ada) if "bob" in d["leaves"]]
        assert len(leaves) == 1
        room = (await _channels(a.http_url))["room"]
        assert (room["subscribers"], room["members"]) == (1, 1)
    finally:
        await ada.close()
        await bob.close()


@pytest.mark.parametrize("round_", range(int(os.environ.get("RL_REPEAT", "1"))))
async def test_concurrent_publishers_on_every_node(
        redis: RedisProcess, node_process: NodeFactory, round_: int) -> None:
    nodes = [await node_process(_url(redis)) for _ in range(3)]
    per_node_subs, per_node_pubs, count = 8, 2, 40
    subs = [await realtime_lab.connect(n.url, user=f"s{i}-{j}")
            for i, n in enumerate(nodes) for j in range(per_node_subs)]
    pubs = [await realtime_lab.connect(n.url, user=f"p{i}-{j}")
            for i, n in enumerate(nodes) for j in range(per_node_pubs)]
    try:
        await asyncio.gather(*(s.subscribe("load") for s in subs))

        async def publish(client: Client, name: str) -> None:
            for k in range(count):
                await client.publish("load", {"p": name, "k": k})

        await asyncio.gather(*(publish(p, p.user or "") for p in pubs))
        total = len(pubs) * count

        async def collect(client: Client) -> dict[str, list[int]]:
            got: dict[str, list[int]] = {}
            for _ in range(total):
                data = (await client.recv_message("load", timeout=10))["data"]
                got.setdefault(data["p"], []).append(data["k"])
            return got

        results = await asyncio.gather(*(collect(s) for s in subs))
        for got in results:
            assert got == {p.user: list(range(count)) for p in pubs}
        for sub in subs:  # and nothing more: no duplicate arrives later
            with pytest.raises(TimeoutError):
                await sub.recv_message("load", timeout=0.05)
    finally:
        for client in subs + pubs:
            await client.close()


async def _node(redis: RedisProcess) -> LabServer:
    broker = RedisBroker(redis.url, node_ttl=TTL, backoff_initial=0.05, backoff_max=0.3,
                         op_timeout=1.0)
    return await realtime_lab.serve(broker=broker)


async def test_redis_outage_local_delivery_continues_and_state_converges(
        redis: RedisProcess) -> None:
    a, b = await _node(redis), await _node(redis)
    assert a.cluster is not None and b.cluster is not None
    broker_a, broker_b = a.cluster.broker, b.cluster.broker
    clients: list[Client] = []

    async def client(server: LabServer, user: str) -> Client:
        c = await realtime_lab.connect(server.url, user=user)
        clients.append(c)
        await c.subscribe("room")
        return c

    try:
        ada, bob = await client(a, "ada"), await client(b, "bob")
        await eventually(lambda: ada.presence.members("room") == ["ada", "bob"])
        await ada.publish("room", "before outage")
        assert (await bob.recv_message("room", timeout=5))["data"] == "before outage"
        assert (await ada.recv_message("room", timeout=5))["data"] == "before outage"

        redis.stop()
        await eventually(lambda: not broker_a.connected and not broker_b.connected,
                         what="both brokers to notice the outage")
        # local delivery continues, cross-node messages are counted as dropped
        carl = await client(a, "carl")
        dropped = broker_a.stats.dropped_out
        await ada.publish("room", "during outage")
        assert (await carl.recv_message("room", timeout=5))["data"] == "during outage"
        assert (await ada.recv_message("room", timeout=5))["data"] == "during outage"
        await eventually(lambda: broker_a.stats.dropped_out == dropped + 1)
        with pytest.raises(TimeoutError):
            await bob.recv_message("room", timeout=0.2)

        redis.start()  # empty: no persistence
        await eventually(lambda: broker_a.connected and broker_b.connected, timeout=10,
                         what="both brokers to reconnect")
        assert broker_a.stats.reconnects >= 1 and broker_b.stats.reconnects >= 1
        want = ["ada", "bob", "carl"]
        await eventually(lambda: all(c.presence.members("room") == want for c in clients),
                         timeout=5, what="presence to converge after the outage")
        await ada.publish("room", "after outage")
        assert (await bob.recv_message("room", timeout=5))["data"] == "after outage"
        assert b.cluster.stats.missed == 1  # the receiver saw the gap too
        room = (await _channels(b.http_url))["room"]
        assert (room["subscribers"], room["members"]) == (3, 3)
    finally:
        for c in clients:
            await c.close()
        await a.stop()
        await b.stop()


async def test_node_starts_while_redis_is_down_and_joins_later(redis: RedisProcess) -> None:
    redis.stop()
    node = await _node(redis)  # starts anyway, serves locally
    other: LabServer | None = None
    try:
        assert node.cluster is not None and not node.cluster.broker.connected
        ada = await realtime_lab.connect(node.url, user="ada")
        await ada.subscribe("room")
        await ada.publish("room", "local only")
        assert (await ada.recv_message("room", timeout=5))["data"] == "local only"
        redis.start()
        await eventually(lambda: node.cluster is not None and node.cluster.broker.connected,
                         timeout=10, what="the broker to connect")
        other = await _node(redis)
        bob = await realtime_lab.connect(other.url, user="bob")
        await bob.subscribe("room")
        assert bob.presence.members("room") == ["ada", "bob"]
        await ada.publish("room", "now cross-node")
        assert (await bob.recv_message("room", timeout=5))["data"] == "now cross-node"
        await ada.close()
        await bob.close()
    finally:
        await node.stop()
        if other is not None:
            await other.stop()


async def test_every_presence_detail_crosses_redis(redis: RedisProcess) -> None:
    """State, metadata, a second tab's connection count and a kick's leave reason reach
    the other node through Redis (the CHANGE script keeps the member's info in
    ``ns:pi:{channel}`` and puts it, the reason and the changed fields in the
    presence envelope); a node that subscribes later reads the info from Redis."""
    a = await realtime_lab.serve(broker=_url(redis))
    b = await realtime_lab.serve(broker=_url(redis))
    clients: list[Client] = []
    try:
        for server, user in ((b, "wat"), (a, "ada")):
            clients.append(await realtime_lab.connect(server.url, user=user))
            await clients[-1].subscribe("room")
        wat, ada = clients
        await eventually(lambda: "ada" in wat.presence.members("room"), what="ada's join")
        await ada.set_presence("room", state="away", meta={"role": "teacher"})
        want = {"connections": 1, "state": "away", "meta": {"role": "teacher"}}
        await eventually(lambda: wat.presence.channels["room"].get("ada") == want,
                         what="ada's state and meta at node b")
        assert b.presence("room")["ada"] == want
        clients.append(await realtime_lab.connect(a.url, user="ada"))
        await clients[-1].subscribe("room")
        await eventually(lambda: wat.presence.channels["room"].get("ada", {}).get(
            "connections") == 2, what="ada's second tab at node b")
        late = await realtime_lab.serve(broker=_url(redis))
        try:
            clients.append(await realtime_lab.connect(late.url, user="zoe"))
            await clients[-1].subscribe("room")
            assert late.presence("room")["ada"] == {**want, "connections": 2}
        finally:
            await clients[-1].close()
            await late.stop()
        a.hub.kick("room", "ada")
        await eventually(lambda: "ada" not in wat.presence.members("room"), what="the kick")
        leaves = [d["leaves"]["ada"] for d in await _diffs(wat) if "ada" in d["leaves"]]
        assert leaves == [{"connections": 0, "reason": "kicked"}]
    finally:
        for client in clients:
            await client.close()
        await a.stop()
        await b.stop()

"""Several servers in one process on a shared InMemoryBus (no Redis needed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from tornado.httpclient import AsyncHTTPClient

import realtime_lab
from realtime_lab import Client, LabServer
from realtime_lab.broker import Envelope, InMemoryBus, MemoryBroker, make_broker

from .conftest import eventually, presence_diffs


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[InMemoryBus, list[LabServer], list[Client]]]:
    bus = InMemoryBus(node_ttl=0.6)
    servers = [await realtime_lab.serve(broker=bus) for _ in range(2)]
    clients: list[Client] = []
    yield bus, servers, clients
    for client in clients:
        await client.close()
    for server in servers:
        await server.stop()


async def _client(clients: list[Client], server: LabServer, user: str, *channels: str) -> Client:
    client = await realtime_lab.connect(server.url, user=user)
    clients.append(client)
    for channel in channels:
        await client.subscribe(channel)
    return client


def test_envelope_round_trip() -> None:
    env = Envelope("n1", 7, "room", "m", '{"type":"message","data":"a\\nb"}')
    assert Envelope.decode(env.encode()) == env


def test_make_broker_specs() -> None:
    bus = InMemoryBus()
    assert make_broker(None) is None
    assert isinstance(make_broker(bus), MemoryBroker)
    assert isinstance(make_broker("memory"), MemoryBroker)
    with pytest.raises(ValueError, match="unknown broker"):
        make_broker("kafka://x")


async def test_cross_node_delivery_and_merged_presence(cluster) -> None:
    _bus, (a, b), clients = cluster
    ada = await _client(clients, a, "ada", "room")
    bob = await _client(clients, b, "bob", "room")
    assert bob.presence.members("room") == ["ada", "bob"]
    await eventually(lambda: ada.presence.members("room") == ["ada", "bob"], what="bob's join")
    await ada.publish("room", {"n": 1})
    await bob.publish("room", {"n": 2})
    for client in (ada, bob):
        got = [(await client.recv_message("room", timeout=5))["data"]["n"] for _ in range(2)]
        assert sorted(got) == [1, 2]
    assert a.presence("room") == b.presence("room") == {
        "ada": {"connections": 1}, "bob": {"connections": 1}}
    body = json.loads((await AsyncHTTPClient().fetch(a.http_url + "/api/channels")).body)
    (room,) = body["channels"]
    assert (room["subscribers"], room["members"], room["local_subscribers"]) == (2, 2, 1)


async def test_multi_tab_user_joins_and_leaves_once(cluster) -> None:
    _bus, (a, b), clients = cluster
    watcher = await _client(clients, a, "watcher", "room")
    tab1 = await _client(clients, a, "ada", "room")
    tab2 = await _client(clients, b, "ada", "room")
    await eventually(lambda: b.presence("room").get("ada") == {"connections": 2})
    # seen first: a join and a leave within one presence batch window would cancel out
    await eventually(lambda: "ada" in watcher.presence.members("room"), what="ada's join")
    await tab1.close()
    await eventually(lambda: a.presence("room").get("ada") == {"connections": 1})
    await tab2.close()
    await eventually(lambda: "ada" not in watcher.presence.members("room"), what="ada's leave")
    diffs = await presence_diffs(watcher)
    joins = [d for d in diffs if "ada" in d["joins"]]
    leaves = [d for d in diffs if "ada" in d["leaves"]]
    assert len(joins) == 1 and len(leaves) == 1


async def test_crashed_node_is_reaped_with_a_leave(cluster) -> None:
    bus, (a, b), clients = cluster
    ada = await _client(clients, a, "ada", "room")
    await _client(clients, b, "bob", "room")
    await eventually(lambda: "bob" in ada.presence.members("room"))
    assert b.cluster is not None
    await b.cluster.stop(crash=True)  # no cleanup: like SIGKILL
    await b.stop()
    took = await eventually(lambda: "bob" not in ada.presence.members("room"), timeout=3,
                            what="the crashed node's presence to be reaped")
    assert took <= bus.node_ttl + bus.node_ttl / 3 + 0.5


async def test_single_node_on_a_bus_sends_nothing() -> None:
    bus = InMemoryBus()
    server = await realtime_lab.serve(broker=bus)
    try:
        client = await realtime_lab.connect(server.url, user="solo")
        await client.subscribe("room")
        for i in range(10):
            await client.publish("room", i)
        for i in range(10):
            assert (await client.recv_message("room", timeout=5))["data"] == i
        assert server.cluster is not None
        assert server.cluster.broker.stats.published == 0  # no other node: no envelope sent
        await client.close()
    finally:
        await server.stop()
    assert bus.members == {}

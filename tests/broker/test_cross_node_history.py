"""History across nodes: the broker numbers a channel's messages, so a client can
recover on any node, in order, exactly once, and learns when the gap is too old."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from realtime_lab import Client, LabServer
from realtime_lab.broker.memory import ChannelHistory
from realtime_lab.core.history import HistoryRule

from .conftest import Connect, RedisProcess, StartNodes, about, eventually, presence_diffs

N = 1000
PUBLISHERS = 4  # on nodes a, b, c, a: 250 messages each


def history(size: int, ttl: float | None = 60.0) -> dict[str, Any]:
    return {"history": (HistoryRule("feed", size=size, ttl=ttl),), "presence_channels": None}


STALL = 30.0  # seconds without any message: a hang (a busy machine is only slower)


async def recover_on(client: Client, since: dict[str, Any], until: int
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Subscribe with ``since``; receive until offset ``until`` arrived (and ``recovered``)."""
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": since})
    got, flags = await receive_recovery(client, since, until)
    return reply, got, flags


async def receive_recovery(client: Client, since: dict[str, Any], until: int
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and ``recovered`` flags after a subscribe with ``since``, until
    offset ``until`` arrived. Each must come within STALL seconds, however long the
    whole takes (the live part waits for publishers that may be slow)."""
    got: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    while not flags or (got[-1]["offset"] if got else since["offset"]) < until:
        msg = await client.recv(timeout=STALL)
        if msg["type"] == "message":
            got.append(msg)
        elif msg["type"] == "recovered":
            flags.append(msg)
    return got, flags


async def watch(client: Client, out: list[dict[str, Any]], count: int) -> None:
    while len(out) < count:
        out.append(await client.recv_message("feed", timeout=STALL))


@pytest.mark.parametrize("round_", range(int(os.environ.get("RL_REPEAT", "1"))))
async def test_recover_on_another_node_after_1000_concurrent_publishes(
        start_nodes: StartNodes, clients: Connect, round_: int) -> None:
    a, b, c = await start_nodes(3, **history(2 * N))
    watchers = [await clients(node, f"w{i}", "feed") for i, node in enumerate((a, b, c))]
    first = await clients(a, "sub", "feed")
    pubs = [await clients(node, f"p{i}") for i, node in enumerate((a, b, c, a))]
    for k in range(10):
        await pubs[0].publish("feed", {"p": "warm", "k": k})
    seen = [await first.recv_message("feed", timeout=10) for _ in range(10)]
    since = dict(first.positions["feed"])
    assert since["offset"] == seen[-1]["offset"]
    await first.close()

    per = N // PUBLISHERS
    total = 10 + N
    logs: list[list[dict[str, Any]]] = [[] for _ in watchers]
    watching = [asyncio.ensure_future(watch(w, log, total)) for w, log in zip(watchers, logs,
                                                                                strict=True)]

    subscribed = asyncio.Event()

    async def publish(client: Client) -> None:
        for k in range(per):
            if k == per * 3 // 4:
                # the last quarter waits for the recovering subscribe's reply, so some
                # messages always come live: on a busy machine the publishers could
                # otherwise all finish before the history is read
                await subscribed.wait()
            await client.publish("feed", {"p": client.user, "k": k}, ack=True)

    publishing = asyncio.gather(*(publish(p) for p in pubs))
    # come back on another node while the others are still publishing
    await eventually(lambda: len(logs[2]) >= 10 + N // 4, timeout=120,
                     what="a quarter published")  # bounds a hang: seconds when quiet
    again = await clients(b, "sub")
    end = since["offset"] + N
    reply = await again.request({"type": "subscribe", "channel": "feed", "since": since})
    subscribed.set()
    got, flags = await receive_recovery(again, since, end)
    await asyncio.wait_for(publishing, 60)
    await asyncio.gather(*watching)

    offsets = [m["offset"] for m in got]
    assert offsets == list(range(since["offset"] + 1, end + 1)), "gaps, duplicates or disorder"
    assert {m["epoch"] for m in got} == {since["epoch"]} == {reply["epoch"]}
    per_publisher: dict[str, list[int]] = {}
    for m in got:
        per_publisher.setdefault(m["data"]["p"], []).append(m["data"]["k"])
    assert per_publisher == {p.user: list(range(per)) for p in pubs}
    assert len(flags) == 1 and flags[0]["complete"] is True
    assert 0 < flags[0]["count"] < N  # some recovered from history, the rest live
    # every node delivered the same messages in the same (offset) order
    for log in logs:
        assert [(m["offset"], m["data"]) for m in log[-N:]] == [(m["offset"], m["data"])
                                                                for m in got]
    with pytest.raises(TimeoutError):  # and nothing twice, later
        await again.recv_message("feed", timeout=0.1)


async def test_gap_larger_than_history_is_flagged_incomplete(
        start_nodes: StartNodes, clients: Connect) -> None:
    a, b = await start_nodes(2, **history(100))
    first = await clients(a, "sub", "feed")
    pub = await clients(a, "pub", "feed")
    await pub.publish("feed", "before")
    msg = await first.recv_message("feed", timeout=10)
    since = {"offset": msg["offset"], "epoch": msg["epoch"]}
    await first.close()
    for i in range(300):
        await pub.publish("feed", i)
    while (await pub.recv_message("feed", timeout=10))["data"] != 299:
        pass  # all 300 numbered and delivered
    again = await clients(b, "sub")
    end = since["offset"] + 300
    reply, got, flags = await recover_on(again, since, end)
    assert reply["offset"] == end
    assert flags[0]["complete"] is False
    assert [m["data"] for m in got] == list(range(200, 300))  # what the history still had
    assert [m["offset"] for m in got] == list(range(end - 99, end + 1))
    await pub.publish("feed", "live")
    assert (await again.recv_message("feed", timeout=10))["data"] == "live"


async def test_unknown_epoch_is_incomplete_and_gives_the_position(
        start_nodes: StartNodes, clients: Connect) -> None:
    a, b = await start_nodes(2, **history(100))
    pub = await clients(a, "pub")
    await pub.publish("feed", 1)
    again = await clients(b, "sub")
    reply, got, flags = await recover_on(again, {"offset": 0, "epoch": "not-this"}, 0)
    assert got == [] and flags[0]["complete"] is False
    assert flags[0]["epoch"] == reply["epoch"] and flags[0]["offset"] == reply["offset"] == 1


async def expired_since(server: LabServer, offset: int, ttl: float) -> None:
    """Wait until the broker has numbered a message after ``offset`` and, by its own
    clock, holds none of them any more (they aged past ``ttl``)."""
    assert server.cluster is not None
    async with asyncio.timeout(ttl * 10):
        while True:
            read = await server.cluster.broker.history_since("feed", offset, ttl=ttl)
            if read is not None and read.offset > offset and not read.texts:
                return
            await asyncio.sleep(0.05)  # polling the broker, bounded by the timeout


async def test_messages_older_than_ttl_are_not_recovered(
        start_nodes: StartNodes, clients: Connect) -> None:
    # "fresh" must still be younger than the ttl when the recovery reads it: on a busy
    # machine that read can come a second after the publish, so the ttl is generous
    ttl = 2.0
    a, b = await start_nodes(2, **history(100, ttl))
    first = await clients(a, "sub", "feed")
    pub = await clients(b, "pub")
    await pub.publish("feed", "seen")
    msg = await first.recv_message("feed", timeout=10)
    since = {"offset": msg["offset"], "epoch": msg["epoch"]}
    await first.close()
    await pub.publish("feed", "too old")
    await expired_since(a, since["offset"], ttl)
    await pub.publish("feed", "fresh")
    again = await clients(a, "sub")
    _reply, got, flags = await recover_on(again, since, since["offset"] + 2)
    assert [m["data"] for m in got] == ["fresh"]
    assert flags[0]["complete"] is False


async def test_subscribe_reply_has_the_same_position_on_every_node(
        start_nodes: StartNodes, clients: Connect) -> None:
    nodes = await start_nodes(2, **history(10))
    pub = await clients(nodes[0], "pub")
    for i in range(3):
        await pub.publish("feed", i, ack=True)
    replies = [await (await clients(n, f"s{i}")).subscribe("feed")
               for i, n in enumerate(nodes)]
    assert {(r["offset"], r["epoch"]) for r in replies} == {(3, replies[0]["epoch"])}


async def test_sender_excluded_when_echo_is_off(start_nodes: StartNodes,
                                                clients: Connect) -> None:
    a, b = await start_nodes(2, echo_to_sender=False, **history(10))
    ada = await clients(a, "ada", "feed")
    bob = await clients(b, "bob", "feed")
    await ada.publish("feed", "from ada")
    assert (await bob.recv_message("feed", timeout=10))["data"] == "from ada"
    with pytest.raises(TimeoutError):
        await ada.recv_message("feed", timeout=0.3)


def test_bus_history_size_and_age() -> None:
    h = ChannelHistory()
    for i in range(5):
        h.append(f'{{"i":{i}}}', now=float(i), size=3, ttl=10.0)
    read = h.read(1, now=5.0, ttl=10.0)
    assert (read.offset, read.first, len(read.texts)) == (5, 3, 3)
    assert not read.complete_since(1, h.epoch) and read.complete_since(2, h.epoch)
    assert read.texts[0] == f'{{"i":2,"offset":3,"epoch":"{h.epoch}"}}'
    old = h.read(2, now=13.5, ttl=10.0)  # offsets 3 and 4 are older than 10 s now
    assert (old.first, len(old.texts)) == (5, 1) and not old.complete_since(2, h.epoch)


async def test_no_broker_history_path_unchanged() -> None:
    import realtime_lab

    server: LabServer = await realtime_lab.serve(**history(10))
    try:
        client = await realtime_lab.connect(server.url, user="x")
        reply = await client.subscribe("feed")
        server.publish("feed", "one")
        msg = await client.recv_message("feed", timeout=5)
        assert msg["offset"] == reply["offset"] + 1 and msg["epoch"] == reply["epoch"]
        assert server.hub.history("feed")[-1]["data"] == "one"
        await client.close()
    finally:
        await server.stop()


async def test_redis_restarted_empty_gives_a_new_epoch(redis: RedisProcess,
                                                      clients: Connect) -> None:
    import realtime_lab
    from realtime_lab.broker.redis import RedisBroker

    servers = [await realtime_lab.serve(
        broker=RedisBroker(redis.url, node_ttl=1.5, backoff_initial=0.05, backoff_max=0.3,
                           op_timeout=1.0), **history(100)) for _ in range(2)]
    try:
        a, b = servers
        first = await clients(a, "sub", "feed")
        pub = await clients(a, "pub")
        await pub.publish("feed", "before")
        msg = await first.recv_message("feed", timeout=10)
        since = {"offset": msg["offset"], "epoch": msg["epoch"]}
        await first.close()
        redis.stop()
        await eventually(lambda: all(s.cluster is not None and not s.cluster.broker.connected
                                     for s in servers), what="the outage to be noticed")
        redis.start()  # empty: the history and its epoch are gone
        await eventually(lambda: all(s.cluster is not None and s.cluster.broker.connected
                                     for s in servers), timeout=10, what="the reconnection")
        await pub.publish("feed", "after", ack=True)
        again = await clients(b, "sub")
        reply, got, flags = await recover_on(again, since, 0)
        assert reply["epoch"] != since["epoch"]
        assert flags[0]["complete"] is False and flags[0]["epoch"] == reply["epoch"]
        assert all(m["epoch"] == reply["epoch"] for m in got)
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.parametrize("round_", range(int(os.environ.get("RL_REPEAT", "1"))))
async def test_client_moved_to_another_node_recovers_by_itself_with_no_presence_flap(
        start_nodes: StartNodes, clients: Connect, round_: int) -> None:
    """A load balancer (the fault proxy) cuts the client and sends it to node b: the
    Python client reconnects, resubscribes with its position, gets every message
    once, in order, and the other members see neither leave nor join (grace)."""
    import realtime_lab
    from realtime_lab.client import Backoff
    from realtime_lab.testing import FaultProxy

    a, b = await start_nodes(2, presence_grace=5.0,
                             history=(HistoryRule("feed", size=2 * N, ttl=60),))
    watcher = await clients(b, "watcher", "feed")
    pub = await clients(a, "pub")
    proxy = await FaultProxy(a.port).start()
    sub = await realtime_lab.connect(proxy.url(), user="sub", reconnect=True,
                                     backoff=Backoff(initial=0.01, max_delay=0.05, jitter="none"))
    try:
        await sub.subscribe("feed")
        await eventually(lambda: "sub" in watcher.presence.members("feed"))
        assert about(await presence_diffs(watcher), "sub") == ["join"]
        got: list[dict[str, Any]] = []
        flags: list[dict[str, Any]] = []

        async def receive() -> None:
            while len(got) < N:
                msg = await sub.recv(timeout=STALL)
                if msg["type"] == "message":
                    got.append(msg)
                elif msg["type"] == "recovered":
                    flags.append(msg)

        receiving = asyncio.ensure_future(receive())
        async def publish() -> None:
            for i in range(N):  # one after the other: still publishing when the cut comes
                await pub.publish("feed", i, ack=True)

        publishing = asyncio.ensure_future(publish())
        await eventually(lambda: len(got) >= N // 4, timeout=120,
                         what="a quarter delivered")  # bounds a hang: seconds when quiet
        proxy.target_port = b.port  # the balancer now sends this client to node b
        proxy.cut()
        await publishing
        await receiving  # each message within STALL seconds
        assert sub.reconnects >= 1
        offsets = [m["offset"] for m in got]
        assert offsets == list(range(offsets[0], offsets[0] + N)), "gaps, duplicates or disorder"
        assert sorted(m["data"] for m in got) == list(range(N))
        assert flags and all(f["complete"] for f in flags)
        assert about(await presence_diffs(watcher), "sub") == []
    finally:
        await sub.close()
        await proxy.stop()

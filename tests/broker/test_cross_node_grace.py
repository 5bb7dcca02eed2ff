"""The presence grace period across nodes: a reconnect to any node within it sends
nothing anywhere; outside it, leave then join; a node that dies still ends in a leave."""

from __future__ import annotations

from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, LabServer

from .conftest import (
    Connect,
    NodeFactory,
    RedisProcess,
    StartNodes,
    about,
    eventually,
    presence_diffs,
)

GRACE = 1.0


def cluster_count(server: LabServer, channel: str, user: str) -> int:
    assert server.cluster is not None
    link = server.cluster.links.get(channel)
    return 0 if link is None else link.members.get(user, 0)


def pending(server: LabServer) -> Any:
    assert server.cluster is not None
    return server.cluster.describe()["node_stats"]["grace_pending"]  # type: ignore[index]


async def _watched(start_nodes: StartNodes, clients: Connect
                   ) -> tuple[list[LabServer], list[Client], Client]:
    servers = await start_nodes(2, presence_grace=GRACE)
    watchers = [await clients(s, f"watch{i}", "room") for i, s in enumerate(servers)]
    ada = await clients(servers[0], "ada", "room")
    await eventually(lambda: all("ada" in w.presence.members("room") for w in watchers),
                     what="ada's join everywhere")
    for w in watchers:
        await presence_diffs(w)  # the joins so far
    return servers, watchers, ada


@pytest.mark.parametrize("target", ["other", "same"])
async def test_reconnect_within_grace_sends_no_leave_and_no_join(
        start_nodes: StartNodes, clients: Connect, target: str) -> None:
    (a, b), watchers, ada = await _watched(start_nodes, clients)
    node = b if target == "other" else a
    loop_time = __import__("asyncio").get_running_loop().time
    closed_at = loop_time()
    await ada.close()
    again = await clients(node, "ada", "room")
    took = loop_time() - closed_at
    assert took < GRACE, f"the reconnect took {took:.2f}s, not within the {GRACE}s grace"
    assert again.presence.members("room") == ["ada", "watch0", "watch1"]
    # the held contribution is withdrawn (other node) or taken over (same node)
    await eventually(lambda: pending(a) == 0, timeout=GRACE * 3, what="the grace to end")
    await eventually(lambda: cluster_count(a, "room", "ada") == 1
                     and cluster_count(b, "room", "ada") == 1, what="one connection of ada")
    for w in watchers:
        assert about(await presence_diffs(w), "ada") == []
        assert "ada" in w.presence.members("room")


async def test_reconnect_after_grace_sends_leave_then_join(
        start_nodes: StartNodes, clients: Connect) -> None:
    (a, b), watchers, ada = await _watched(start_nodes, clients)
    await ada.close()
    took = await eventually(lambda: all("ada" not in w.presence.members("room")
                                        for w in watchers), timeout=GRACE * 4,
                            what="ada's leave after the grace")
    assert took >= GRACE * 0.9, f"leave after {took:.2f}s, before the {GRACE}s grace ended"
    await clients(b, "ada", "room")
    await eventually(lambda: all("ada" in w.presence.members("room") for w in watchers),
                     what="ada's join")
    for w in watchers:
        assert about(await presence_diffs(w), "ada") == ["leave", "join"]


async def test_unsubscribe_has_no_grace(start_nodes: StartNodes, clients: Connect) -> None:
    (a, _b), watchers, ada = await _watched(start_nodes, clients)
    await ada.unsubscribe("room")
    assert pending(a) == 0
    await eventually(lambda: all("ada" not in w.presence.members("room") for w in watchers),
                     timeout=GRACE / 2, what="an immediate leave")


async def test_node_killed_during_grace_still_ends_in_one_leave(
        redis: RedisProcess, node_process: NodeFactory) -> None:
    url = f"{redis.url}?node_ttl=1.5"
    grace = "30"  # far longer than the node TTL: only the reaping can end it
    a = await node_process(url, grace)
    b = await node_process(url, grace)
    watcher = await realtime_lab.connect(b.url, user="watcher")
    ada = await realtime_lab.connect(a.url, user="ada")
    try:
        await watcher.subscribe("room")
        await ada.subscribe("room")
        await eventually(lambda: "ada" in watcher.presence.members("room"))
        await ada.close()  # held on node a for 30 s
        a.kill()
        took = await eventually(lambda: "ada" not in watcher.presence.members("room"),
                                timeout=1.5 * 3, what="the killed node to be reaped")
        print(f"\nleave {took:.2f}s after SIGKILL during the grace (node_ttl=1.5s)")
        assert took <= 1.5 + 1.5 / 3 + 0.5
        assert about(await presence_diffs(watcher), "ada") == ["join", "leave"]
    finally:
        await watcher.close()
        await ada.close()

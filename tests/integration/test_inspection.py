"""server.inspect(): frozen snapshots of counters, queues and connections; server.restart()."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import realtime_lab
from realtime_lab.client import Backoff
from realtime_lab.core.hub import Hub
from realtime_lab.inspection import inspect
from realtime_lab.testing import NullPort


def test_snapshot_is_a_copy_and_frozen() -> None:
    hub = Hub()
    s = hub.open(NullPort(), user="ada")
    hub.subscribe(s, "room")
    snap = inspect(hub)
    assert snap.connection_count == 1 and snap.channel_count == 1
    (conn,) = snap.connections
    assert conn.user == "ada" and conn.channels == ("room",) and conn.state == "open"
    assert conn.rtt_ms is None and conn.queued_bytes == 0 and conn.wire == "json"
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.connection_count = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.counters["published"] = 3  # type: ignore[index]
    hub.publish("room", "x")
    assert snap.counters["published"] == 0 and inspect(hub).counters["published"] == 1


def test_top_n_by_queue_and_totals() -> None:
    hub = Hub(schedule=lambda cb: None)  # never flushed: frames stay queued
    sessions = [hub.open(NullPort(), user=f"u{i}") for i in range(5)]
    for i, s in enumerate(sessions):
        hub.subscribe(s, "room")
        if i >= 3:
            hub.subscribe(s, "extra")
    hub.publish("extra", "y" * 1000)
    snap = inspect(hub, connections=2)
    assert [c.user for c in snap.connections] == ["u3", "u4"] or \
        [c.user for c in snap.connections] == ["u4", "u3"]
    assert snap.queued_bytes == sum(c.queued_bytes for c in inspect(hub).connections)
    assert snap.queued_bytes > 2000 and snap.max_queue_fill > 0
    assert inspect(hub, connections=0).connections == ()
    assert inspect(hub, connections=0).queued_bytes == snap.queued_bytes
    counters_only = inspect(hub, connections=False)
    assert counters_only.connections == () and counters_only.queued_bytes is None
    assert counters_only.connection_count == 5


async def test_server_inspect_and_restart_keep_the_hub() -> None:
    server = await realtime_lab.serve(port=0)
    opened: list[str] = []
    server.on("connection.opened", lambda e: opened.append(e.user or ""))
    client = await realtime_lab.connect(server.url, user="ada", reconnect=True,
                                        backoff=Backoff(initial=0.05, max_delay=0.1))
    try:
        await client.subscribe("room")
        assert server.inspect().connections[0].channels == ("room",)
        port = server.port
        await server.restart()
        assert server.running and server.port == port
        async with asyncio.timeout(10):
            while not (client.reconnects == 1 and "ada" in server.presence("room")):
                await asyncio.sleep(0.02)
        assert opened == ["ada", "ada"]  # the handler registered before the restart still runs
        assert server.inspect().counters["connections_opened"] == 2
    finally:
        await client.close()
        await server.stop()

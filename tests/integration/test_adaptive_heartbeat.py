"""Adaptive heartbeat under load, over real sockets: the interval grows with connections,
every client is told, pings are spread over ticks, and nobody times out."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from tornado.websocket import websocket_connect

import realtime_lab
from realtime_lab.transports.pump import Pump

N = 150


@pytest.mark.slow
async def test_interval_follows_load_and_pings_are_spread(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    loop = asyncio.get_running_loop()
    ping_times: list[float] = []
    real_ping = Pump.ping

    def counting_ping(self: Pump) -> None:
        ping_times.append(loop.time())
        real_ping(self)

    monkeypatch.setattr(Pump, "ping", counting_ping)
    server = await realtime_lab.serve(port=0, heartbeat_min_interval=0.3,
                                      heartbeat_max_interval=1.5, heartbeat_timeout=5.0,
                                      heartbeat_load_connections=100)
    changes = server.events("heartbeat.changed")
    clients: list[Any] = []
    told: list[float] = []
    readers: list[asyncio.Task[None]] = []

    async def read(i: int, ws: Any) -> None:  # keep reading, so Tornado answers pings
        while (text := await ws.read_message()) is not None:
            msg = json.loads(text)
            if msg["type"] == "heartbeat":
                told[i] = msg["interval"]

    try:
        for _ in range(N):
            ws = await websocket_connect(server.url)
            welcome = json.loads(await ws.read_message())
            assert welcome["heartbeat"]["adaptive"] is True
            clients.append(ws)
            told.append(welcome["heartbeat"]["interval"])
            readers.append(asyncio.create_task(read(len(clients) - 1, ws)))
        change = await changes.wait_for(timeout=5)
        while change.interval < 1.5:
            change = await changes.wait_for(timeout=5)
        assert change.interval == 1.5
        deadline = loop.time() + 5
        while any(t != 1.5 for t in told):  # every client is told the current interval
            assert loop.time() < deadline, f"not told: {told}"
            await asyncio.sleep(0.01)  # polling the readers' state, bounded
        ping_times.clear()
        start = loop.time()
        await asyncio.sleep(2 * 1.5)  # observe two full intervals of pinging
        assert server.hub.stats.heartbeat_timeouts == 0
        assert len(server.hub.sessions) == N
        window = [t - start for t in ping_times]
        assert len(window) >= N, "everyone was pinged at least once"
        tick = server.hub.tick_period
        budget = math.ceil(N * tick / 1.5)
        buckets: dict[int, int] = {}
        for t in window:
            buckets[int(t / tick)] = buckets.get(int(t / tick), 0) + 1
        assert max(buckets.values()) <= 2 * budget, "no tick pings everyone at once"
    finally:
        for ws in clients:
            ws.close()
        for task in readers:
            task.cancel()
        changes.close()
        await server.stop()

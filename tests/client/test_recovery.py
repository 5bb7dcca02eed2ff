"""Recovery after reconnect: messages published while a subscriber was cut off arrive
in order, exactly once; a history smaller than the gap is reported as incomplete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import realtime_lab
from realtime_lab import ServerOptions
from realtime_lab.client import Backoff, Client
from realtime_lab.core.history import HistoryRule
from realtime_lab.testing import FaultProxy, RestartableServer

FAST = Backoff(initial=0.01, max_delay=0.05, jitter="none")
N = 1000


@pytest.fixture
def lab_options(request: pytest.FixtureRequest) -> ServerOptions:
    size = 100 if "small" in request.function.__name__ else 2 * N
    return ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3,
                         presence_channels=None, max_outbound_bytes=8 * 1024 * 1024,
                         history=(HistoryRule("feed", size=size, ttl=60),))


async def collect(client: Client, until: Any, got: list[Any], flags: list[dict[str, Any]],
                  timeout: float = 15.0, *, flag: bool = False) -> None:
    """Receive until message ``until`` (and, with ``flag``, a ``recovered`` flag) arrived."""
    async with asyncio.timeout(timeout):
        while not got or got[-1] != until or (flag and not flags):
            msg = await client.recv()
            if msg["type"] == "message":
                got.append(msg["data"])
            elif msg["type"] == "recovered":
                flags.append(msg)


async def publish_while_cut(lab: RestartableServer, proxy: FaultProxy, start: int) -> None:
    proxy.cut()
    for i in range(start, start + N):
        lab.current.publish("feed", i)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the client reconnect in the middle of it


async def test_recovers_1000_missed_messages_in_order_exactly_once(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = await realtime_lab.connect(proxy.url(), user="sub", reconnect=True, backoff=FAST)
    got: list[Any] = []
    flags: list[dict[str, Any]] = []
    try:
        await client.subscribe("feed")
        for i in range(10):
            lab.current.publish("feed", i)
        await collect(client, 9, got, flags)
        await publish_while_cut(lab, proxy, 10)
        await collect(client, N + 9, got, flags, flag=True)
        assert got == list(range(N + 10))
        assert flags and all(f["complete"] for f in flags)
        assert client.reconnects >= 1
    finally:
        await client.close()


async def test_small_history_reports_incomplete_recovery(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = await realtime_lab.connect(proxy.url(), user="sub", reconnect=True, backoff=FAST)
    got: list[Any] = []
    flags: list[dict[str, Any]] = []
    try:
        await client.subscribe("feed")
        lab.current.publish("feed", 0)
        await collect(client, 0, got, flags)
        proxy.cut()
        for i in range(1, N + 1):
            lab.current.publish("feed", i)
        await collect(client, N, got, flags, flag=True)
        assert flags[-1]["complete"] is False
        assert got[1:] == list(range(N - 99, N + 1))  # what the history still had
        lab.current.publish("feed", "live")
        await collect(client, "live", got, flags)
    finally:
        await client.close()

"""Presence over real sockets: grace period on reconnect, idle timeout, client presence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.client import Client


@pytest.fixture
def options(request: pytest.FixtureRequest) -> ServerOptions:
    idle = 0.3 if "idle" in request.function.__name__ else None
    return ServerOptions(presence_grace=0.4, presence_details=True,
                         presence_idle_timeout=idle)


async def next_diff(client: Client, timeout: float = 3.0, about: str = "ada") -> dict[str, Any]:
    """The next presence_diff that concerns user ``about``."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.recv()
            if msg["type"] == "presence_diff" and about in {**msg["joins"], **msg["leaves"]}:
                return msg


async def no_diff_within(client: Client, seconds: float) -> bool:
    try:
        msg = await next_diff(client, seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected diff {msg}")


async def test_reconnect_within_grace_is_silent_outside_is_leave_then_join(
        server: LabServer, connect) -> None:
    watcher = await connect(user="w")
    await watcher.subscribe("room")
    ada = await connect(user="ada")
    await ada.subscribe("room")
    assert "ada" in (await next_diff(watcher))["joins"]
    await ada.close()
    ada = await connect(user="ada")  # a reconnect: a new connection of the same user
    await ada.subscribe("room")
    assert await no_diff_within(watcher, 0.6)
    await ada.close()
    leave = await next_diff(watcher)
    assert leave["leaves"] == {"ada": {"connections": 0, "reason": "closed"}}
    ada = await connect(user="ada")
    await ada.subscribe("room")
    assert "ada" in (await next_diff(watcher))["joins"]


async def test_idle_member_goes_away_and_comes_back(server: LabServer, connect) -> None:
    watcher = await connect(user="w", heartbeat=False)
    await watcher.subscribe("room")
    ada = await connect(user="ada", heartbeat=False)
    await ada.subscribe("room")
    async with asyncio.timeout(5):
        while True:
            diff = await next_diff(watcher)
            info = diff["joins"].get("ada")
            if info and info.get("state") == "away":
                break
    await ada.set_presence("room", meta={"back": True})
    async with asyncio.timeout(5):
        while True:
            diff = await next_diff(watcher)
            info = diff["joins"].get("ada", {})
            if "state" not in info and info.get("meta") == {"back": True}:
                break
    assert server.presence("room")["ada"].get("meta") == {"back": True}

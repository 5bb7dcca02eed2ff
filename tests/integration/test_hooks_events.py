"""Hooks and the event stream over real sockets (async hooks, exact codes, order kept)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from tornado.websocket import websocket_connect

import realtime_lab
from realtime_lab.core.hooks import ConnectRequest, Hooks, Refuse
from realtime_lab.core.session import Session


async def until_closed(url: str) -> tuple[list[dict[str, Any]], int | None]:
    ws = await websocket_connect(url)
    got = []
    while (text := await asyncio.wait_for(ws.read_message(), 5)) is not None:
        got.append(json.loads(text))
    return got, ws.close_code


async def on_connect(req: ConnectRequest) -> Any:
    await asyncio.sleep(0.01)  # e.g. a database look-up
    if req.query.get("user") == "mallory":
        return Refuse(4010, "banned")
    if req.query.get("user") == "crash":
        raise RuntimeError("bug in the hook")
    return {"metadata": {"plan": req.query.get("plan", "free")}}


async def jittery(session: Session, msg: dict[str, Any]) -> Any:
    await asyncio.sleep(random.random() * 0.005)
    if msg.get("data") == "forbidden word":
        return False
    return None


def on_subscribe(session: Session, channel: str) -> Any:
    if channel == "boom":
        raise ValueError("bug")
    return channel != "vip" or session.metadata.get("plan") == "pro"


@pytest.fixture
async def lab() -> Any:
    hooks = Hooks(on_connect=on_connect, on_message=jittery, on_subscribe=on_subscribe,
                  timeout=2)
    server = await realtime_lab.serve(port=0, hooks=hooks)
    events = server.events(maxsize=10_000)
    healthy = await realtime_lab.connect(server.url, user="healthy")
    await healthy.subscribe("calm")
    try:
        yield server, healthy, events
    finally:
        events.close()
        await healthy.close()
        await server.stop()


async def check_healthy(server: Any, healthy: Any, note: str) -> None:
    server.publish("calm", note)
    assert (await healthy.recv_message("calm", timeout=5))["data"] == note


async def test_async_on_connect_outcomes(lab: Any) -> None:
    server, healthy, events = lab
    refusals = server.events("connection.refused")
    msgs, code = await until_closed(server.url + "?user=mallory")
    assert code == 4010 and msgs == [{"type": "error", "code": "connect_refused",
                                      "message": "banned"}]
    msgs, code = await until_closed(server.url + "?user=crash")
    assert code == 4005 and msgs[0]["code"] == "hook_failed"
    pro = await realtime_lab.connect(server.url + "?plan=pro", user="pat")
    opened = await events.wait_for("connection.opened", user="pat", timeout=5)
    assert opened.metadata == {"plan": "pro"}
    await pro.subscribe("vip")
    free = await realtime_lab.connect(server.url, user="fred")
    with pytest.raises(realtime_lab.RequestFailed) as info:
        await free.subscribe("vip")
    assert info.value.code == "subscribe_refused"
    with pytest.raises(realtime_lab.RequestFailed) as info:
        await free.subscribe("boom")
    assert info.value.code == "hook_failed"
    refused = refusals.drain()
    assert [(e.code, e.reason) for e in refused] == [(4010, "connect_refused"),
                                                     (4005, "hook_failed")]
    await check_healthy(server, healthy, "after hooks")
    await pro.close()
    await free.close()


async def test_async_on_message_keeps_per_connection_order(lab: Any) -> None:
    server, healthy, events = lab
    pubs = [await realtime_lab.connect(server.url, user=f"p{i}") for i in range(3)]
    for p in pubs:
        for i in range(30):
            await p.send({"type": "publish", "channel": "calm", "data": [p.user, i]})
    await pubs[0].send({"type": "publish", "channel": "calm", "data": "forbidden word"})
    seen: dict[str, list[int]] = {p.user: [] for p in pubs}
    while sum(map(len, seen.values())) < 90:
        user, i = (await healthy.recv_message("calm", timeout=5))["data"]
        seen[user].append(i)
    assert all(v == list(range(30)) for v in seen.values())
    dropped = await events.wait_for("message.dropped", timeout=5)
    assert dropped.reason == "hook" and dropped.user == "p0"
    for p in pubs:
        await p.close()


async def test_events_stream_filters_over_sockets(lab: Any) -> None:
    server, healthy, _ = lab
    async with server.events(("channel.*", "presence.*"), channel="room-*") as stream:
        ada = await realtime_lab.connect(server.url, user="ada")
        await ada.subscribe("room-1")
        await ada.subscribe("other")
        await ada.unsubscribe("room-1")
        got = [(await stream.get(timeout=5)).type for _ in range(6)]
        assert got == ["channel.occupied", "channel.subscribed", "presence.join",
                       "channel.unsubscribed", "presence.leave", "channel.vacated"]
        assert len(stream) == 0, "events of 'other' were filtered out"
        await ada.close()
    by_user = server.events(user="bob", maxsize=2)
    bob = await realtime_lab.connect(server.url, user="bob")
    for ch in ("a", "b", "c"):
        await bob.subscribe(ch)
    assert by_user.dropped > 0 and len(by_user) == 2, "bounded: the oldest were dropped"
    assert all(e.user == "bob" for e in by_user.drain())
    by_user.close()
    await bob.close()


async def test_more_hook_outcomes_over_sockets() -> None:
    """on_message modify, on_unsubscribe refuse, on_presence modify and veto, on_disconnect."""
    gone: list[tuple[str, int | None]] = []

    async def presence(session: Session, channel: str, change: dict[str, Any]) -> Any:
        return False if session.user == "ghost" else {"role": "guest"}

    hooks = Hooks(
        on_message=lambda s, m: {**m, "data": str(m["data"]).strip()}
        if m.get("type") == "publish" else None,
        on_unsubscribe=lambda s, ch: Refuse("sticky", "you cannot leave") if ch == "jail"
        else True,
        on_presence=presence,
        on_disconnect=lambda s, code, reason: gone.append((s.user, code)),
    )
    server = await realtime_lab.serve(port=0, hooks=hooks)
    errors = server.events(lambda e: e.type == "error" and e.code == "sticky")
    try:
        ada = await realtime_lab.connect(server.url, user="ada")
        ghost = await realtime_lab.connect(server.url, user="ghost")
        await ada.subscribe("jail")
        await ghost.subscribe("jail")
        assert server.presence("jail") == {"ada": {"connections": 1, "meta": {"role": "guest"}}}
        await ada.publish("jail", "   padded   ")
        assert (await ghost.recv_message("jail", timeout=5))["data"] == "padded"
        with pytest.raises(realtime_lab.RequestFailed) as info:
            await ada.unsubscribe("jail")
        assert info.value.code == "sticky"
        assert (await errors.wait_for(timeout=5)).user == "ada", "the where= filter"
        await ghost.close()
        await ada.close()
        async with server.events("connection.closed") as closed:
            while len(gone) < 2:
                await closed.get(timeout=5)
        assert sorted(gone) == [("ada", 1000), ("ghost", 1000)]
    finally:
        errors.close()
        await server.stop()

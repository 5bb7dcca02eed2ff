"""Presence rules over real sockets: timeout leaves (real clock), kicks, limits and the
on_presence hook on a client's presence message; grace reconnects leave no event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import realtime_lab
from realtime_lab import LabServer, RequestFailed, ServerOptions
from realtime_lab.client import Client
from realtime_lab.core.hooks import Hooks, Refuse
from realtime_lab.core.session import Session


async def diff_about(client: Client, user: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next presence_diff that concerns ``user``."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.recv()
            if msg["type"] == "presence_diff" and user in {**msg["joins"], **msg["leaves"]}:
                return msg


@contextlib.asynccontextmanager
async def lab(options: ServerOptions, hooks: Hooks | None = None
              ) -> AsyncIterator[tuple[LabServer, list[Any], list[Client]]]:
    """A server, its presence events, and the clients opened (all closed at the end)."""
    server = await realtime_lab.serve(port=0, options=options, hooks=hooks)
    events: list[Any] = []
    server.on("presence.*", events.append)
    clients: list[Client] = []
    try:
        yield server, events, clients
    finally:
        for c in clients:
            await c.close()
        await server.stop()


async def open_client(server: LabServer, clients: list[Client], user: str,
                      **kwargs: Any) -> Client:
    client = await realtime_lab.connect(server.url, user=user, **kwargs)
    clients.append(client)
    return client


@pytest.mark.parametrize("grace", [0.0, 0.3])
async def test_idle_close_is_a_leave_with_reason_timeout(grace: float) -> None:
    """Real clock: ada sends nothing and is closed for idleness (4105); the watcher
    keeps talking and sees one leave with reason timeout (after the grace period)."""
    opts = ServerOptions(idle_timeout=0.4, presence_grace=grace)
    async with lab(opts) as (server, events, clients):
        watcher = await open_client(server, clients, "w", heartbeat=False)
        await watcher.subscribe("room")
        ada = await open_client(server, clients, "ada", heartbeat=False)
        await ada.subscribe("room")
        assert "ada" in (await diff_about(watcher, "ada"))["joins"]

        async def keep_talking() -> None:
            while True:
                await watcher.ping()
                await asyncio.sleep(0.1)

        talker = asyncio.ensure_future(keep_talking())
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            leave = await diff_about(watcher, "ada")
            took = loop.time() - start
        finally:
            talker.cancel()
        assert leave["leaves"] == {"ada": {"connections": 0, "reason": "timeout"}}
        assert took >= 0.3 + grace * 0.9
        assert watcher.presence.members("room") == ["w"]
        assert [(e.type, e.user, e.reason) for e in events if e.type != "presence.join"] == [
            ("presence.timeout", "ada", "timeout")]


async def test_reconnect_within_grace_emits_no_event_outside_leave_then_join() -> None:
    async with lab(ServerOptions(presence_grace=0.4)) as (server, events, clients):
        watcher = await open_client(server, clients, "w")
        await watcher.subscribe("room")
        ada = await open_client(server, clients, "ada")
        await ada.subscribe("room")
        await diff_about(watcher, "ada")
        events.clear()
        await ada.close()
        ada = await open_client(server, clients, "ada")  # back within 0.4 s
        await ada.subscribe("room")
        await asyncio.sleep(0.6)  # past the grace period: let a wrong leave show up
        assert events == [] and watcher.presence.members("room") == ["ada", "w"]
        await ada.close()
        leave = await diff_about(watcher, "ada")
        ada = await open_client(server, clients, "ada")
        await ada.subscribe("room")
        join = await diff_about(watcher, "ada")
        assert leave["leaves"]["ada"]["reason"] == "closed" and "ada" in join["joins"]
        assert [(e.type, e.user) for e in events] == [("presence.leave", "ada"),
                                                      ("presence.join", "ada")]


async def test_kick_unsubscribes_every_tab_with_reason_kicked() -> None:
    # diffs at once: the join and the second tab are two diffs (batched, they merge)
    async with lab(ServerOptions(presence_batch_window=0)) as (server, events, clients):
        watcher = await open_client(server, clients, "w")
        await watcher.subscribe("room")
        tabs = [await open_client(server, clients, "bob") for _ in range(2)]
        for tab in tabs:
            await tab.subscribe("room")
        await diff_about(watcher, "bob")  # join
        await diff_about(watcher, "bob")  # second tab: connections 2
        assert server.hub.kick("room", "bob") == 2
        for tab in tabs:
            async with asyncio.timeout(5):
                while (msg := await tab.recv())["type"] != "unsubscribed":
                    pass
            assert msg == {"type": "unsubscribed", "channel": "room", "reason": "kicked"}
        leave = await diff_about(watcher, "bob")
        assert leave["leaves"] == {"bob": {"connections": 0, "reason": "kicked"}}
        assert [(e.type, e.user) for e in events] == [
            ("presence.join", "w"), ("presence.join", "bob"), ("presence.leave", "bob")]
        assert events[-1].reason == "kicked"
        assert await tabs[0].ping() >= 0  # still connected


async def test_limits_have_their_error_codes_and_the_connection_stays_usable() -> None:
    opts = ServerOptions(max_presence_members=2, max_presence_meta_bytes=64)
    async with lab(opts) as (server, events, clients):
        a, b, c = [await open_client(server, clients, u) for u in ("a", "b", "c")]
        await a.subscribe("room")
        await b.subscribe("room")
        with pytest.raises(RequestFailed) as full:
            await c.subscribe("room")
        assert full.value.code == "presence_full"
        with pytest.raises(RequestFailed) as big:
            await a.set_presence("room", meta={"bio": "x" * 100})
        assert big.value.code == "presence_meta_too_large"
        with pytest.raises(RequestFailed) as bad:
            await a.set_presence("room", state="sleeping")
        assert bad.value.code == "bad_presence_state"
        assert (await a.set_presence("room", state="away", meta={"bio": "ok"}))["changed"] == [
            "state", "meta"]
        assert (await c.subscribe("other"))["type"] == "subscribed"
        assert sorted(server.presence("room")) == ["a", "b"]
        assert server.presence("room")["a"] == {"connections": 1, "state": "away",
                                                "meta": {"bio": "ok"}}


async def test_on_presence_hook_runs_for_the_presence_message() -> None:
    seen: list[dict[str, Any]] = []

    async def on_presence(session: Session, channel: str, change: dict[str, Any]) -> Any:
        seen.append(change)
        await asyncio.sleep(0.01)
        if change.get("state") == "busy":
            return Refuse("busy_not_allowed", "nobody is busy in the lounge")
        if change["meta"].get("name") == "root":
            return False
        return {**change["meta"], "checked": True}

    async with lab(ServerOptions(), Hooks(on_presence=on_presence)) as (server, _, clients):
        watcher = await open_client(server, clients, "w")
        await watcher.subscribe("lounge")
        ada = await open_client(server, clients, "ada")
        await ada.subscribe("lounge")
        await diff_about(watcher, "ada")
        reply = await ada.set_presence("lounge", state="away", meta={"name": "Ada"})
        assert reply["changed"] == ["state", "meta"]
        diff = await diff_about(watcher, "ada")
        assert diff["joins"]["ada"] == {"connections": 1, "state": "away",
                                        "meta": {"name": "Ada", "checked": True}}
        assert diff["changed"] == {"ada": ["state", "meta"]}
        assert seen[-1] == {"event": "update", "state": "away", "meta": {"name": "Ada"},
                            "changed": ["state", "meta"]}
        with pytest.raises(RequestFailed) as busy:
            await ada.set_presence("lounge", state="busy")
        assert busy.value.code == "busy_not_allowed"
        with pytest.raises(RequestFailed) as root:
            await ada.set_presence("lounge", meta={"name": "root"})
        assert root.value.code == "presence_refused"
        assert await ada.ping() >= 0
        assert server.presence("lounge")["ada"]["meta"] == {"name": "Ada", "checked": True}
        assert watcher.presence.channels["lounge"]["ada"] == server.presence("lounge")["ada"]

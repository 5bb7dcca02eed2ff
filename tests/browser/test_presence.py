"""Chromium: the browser client's presence.

* the presence state and metadata a page set with setPresence() are set again
  after a reconnect, as another (Python) client sees;
* the page's member list follows the server's view with both wire shapes
  (presence_details True: exact connection counts, update diffs, leave reasons;
  False: joins and leaves only), and its presence events say what changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, ServerOptions
from realtime_lab.client.presence import PresenceView
from realtime_lab.testing import FaultProxy, RestartableServer

from .conftest import Page, eventually, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]
Members = dict[str, dict[str, Any]]


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    try:
        yield made
    finally:
        for client in made:
            await client.close()


async def python_client(clients: list[Client], url: str, user: str) -> Client:
    client = await realtime_lab.connect(url, user=user, timeout=10)
    clients.append(client)
    await client.subscribe("room")
    return client


async def receive_until(client: Client, done: Callable[[], bool], log: list[dict[str, Any]],
                        timeout: float = 15) -> None:
    """Read ``client``'s messages into ``log`` until ``done()`` (bounded)."""
    async with asyncio.timeout(timeout):
        while not done():
            log.append(await client.recv())


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


async def test_presence_state_and_meta_are_restored_after_a_cut(
        context: Any, clients: list[Client]) -> None:
    # each change in its own diff (no batch window): the test reads the diffs one by one
    options = ServerOptions(heartbeat_interval=2, heartbeat_timeout=2, presence_details=True,
                            presence_batch_window=0)
    async with RestartableServer(options) as lab, FaultProxy(lab.port) as proxy:
        bob = await python_client(clients, lab.url, "bob")
        page: Page = await context.new_page()
        await open_page_client(page, proxy.url("", scheme="http"), "ada")
        await page.evaluate("lab.c.subscribe('room')")
        await page.evaluate("lab.c.setPresence('room', {state: 'away', meta: {desk: 7}})")
        reply = await page.evaluate("lab.c.setPresence('room', {meta: {desk: 8}})")
        assert reply["changed"] == ["meta"]  # later changes win; the state is kept
        wanted = {"connections": 1, "state": "away", "meta": {"desk": 8}}
        log: list[dict[str, Any]] = []

        def diffs() -> list[tuple[Any, ...]]:
            return [(m["joins"], m["leaves"], m.get("changed")) for m in log
                    if m["type"] == "presence_diff"]

        await receive_until(bob, lambda: len(diffs()) == 3, log)
        proxy.cut()  # the server sees ada's connection close: ada leaves
        await receive_until(bob, lambda: len(diffs()) == 6, log)
        away7 = {"connections": 1, "state": "away", "meta": {"desk": 7}}
        assert diffs() == [
            ({"ada": {"connections": 1}}, {}, None),
            ({"ada": away7}, {}, {"ada": ["state", "meta"]}),
            ({"ada": wanted}, {}, {"ada": ["meta"]}),
            ({}, {"ada": {"connections": 0, "reason": "closed"}}, None),  # cut
            ({"ada": {"connections": 1}}, {}, None),  # back, as a new session
            ({"ada": wanted}, {}, {"ada": ["state", "meta"]}),  # and restored
        ]
        assert bob.presence.channels["room"]["ada"] == wanted
        assert lab.current.presence("room")["ada"] == wanted
        # the page is OPEN once the restore's reply is in: bob may see the diff first
        await wait_page(page, "lab.c.reconnects === 1 && lab.c.state === 'open'")
        assert await page.evaluate("lab.c.presenceSet('room')") == {"state": "away",
                                                                    "meta": {"desk": 8}}
        await wait_page(page, "(want) => lab.canon(lab.c.presence.get('room')?.ada) === want",
                        canonical(wanted))

        await page.evaluate("lab.c.unsubscribe('room').then(() => lab.c.subscribe('room'))")
        assert await page.evaluate("lab.c.presenceSet('room')") is None  # forgotten
        await receive_until(bob, lambda: len(diffs()) == 8, log)  # leave, join: fresh
        assert diffs()[-1] == ({"ada": {"connections": 1}}, {}, None)
        assert await page.evaluate("lab.errors") == []


async def test_a_reconnect_within_the_grace_period_is_invisible_to_others(
        context: Any, clients: list[Client]) -> None:
    """The server keeps the member during the grace; restoring what it has changes nothing."""
    options = ServerOptions(heartbeat_interval=2, heartbeat_timeout=2, presence_details=True,
                            presence_grace=10)
    async with RestartableServer(options) as lab, FaultProxy(lab.port) as proxy:
        bob = await python_client(clients, lab.url, "bob")
        page: Page = await context.new_page()
        await open_page_client(page, proxy.url("", scheme="http"), "ada")
        await page.evaluate("lab.c.subscribe('room')")
        await page.evaluate("lab.c.setPresence('room', {state: 'busy', meta: {desk: 3}})")
        log: list[dict[str, Any]] = []
        busy = {"connections": 1, "state": "busy", "meta": {"desk": 3}}

        def ada_in_log() -> Any:  # ada as the messages read so far show her
            view = PresenceView()
            for m in log:
                if m["type"].startswith("presence_"):
                    view.apply(m)
            return view.channels.get("room", {}).get("ada")

        # her join and her change: one diff each, or one merged diff (a batch window)
        await receive_until(bob, lambda: ada_in_log() == busy, log)
        announced = lab.current.hub.presence_batch.stats.diffs_in
        seen = len(log)
        proxy.cut()
        await wait_page(page, "lab.c.reconnects === 1 && lab.c.state === 'open'")
        await page.evaluate("lab.c.publish('room', 'back')")
        await receive_until(bob, lambda: log[-1]["type"] == "message", log)
        assert [m["type"] for m in log[seen:]] == ["message"]  # nothing new
        assert lab.current.hub.presence_batch.stats.diffs_in == announced  # nor on its way
        assert lab.current.presence("room")["ada"] == {
            "connections": 1, "state": "busy", "meta": {"desk": 3}}
        assert await page.evaluate("lab.errors") == []


async def test_a_refused_presence_restore_is_reported_and_the_channel_kept(
        context: Any) -> None:
    async with RestartableServer(ServerOptions(presence_details=True)) as lab:
        page: Page = await context.new_page()
        await open_page_client(page, lab.http_url, "ada")
        await page.evaluate("lab.c.subscribe('room')")
        await page.evaluate("lab.c.setPresence('room', {state: 'away'})")
        lab.options = lab.options.with_changes(presence_states=("online", "busy"),
                                               presence_idle_state="busy")
        await lab.restart()  # the new server no longer knows the state "away"
        await wait_page(page, "lab.c.state === 'open' && lab.errors.length > 0")
        errors = await page.evaluate("lab.errors")
        assert [e["code"] for e in errors] == ["bad_presence_state"]
        assert errors[0]["channel"] == "room" and "presence restore" in errors[0]["message"]
        assert await page.evaluate("lab.c.subscriptions") == ["room"]
        assert lab.current.presence("room") == {"ada": {"connections": 1}}


# ---------------------------------------------------------------- both wire shapes

def shown(members: Members, details: bool) -> Members:
    """What a client can know: without presence_details, not the connection counts."""
    if details:
        return members
    return {user: {k: v for k, v in info.items() if k != "connections"}
            for user, info in members.items()}


async def page_shows(page: Page, members: Members, details: bool) -> None:
    """Wait until the page's member list equals ``members`` (as the wire shape allows)."""
    await wait_page(page, """(arg) => {
        const members = lab.c.presence.get("room") || {};
        const seen = Object.fromEntries(Object.entries(members).map(([user, info]) => {
            const copy = {...info};
            if (!arg.details) delete copy.connections;
            return [user, copy];
        }));
        return lab.canon(seen) === arg.want;
    }""", {"want": canonical(shown(members, details)), "details": details})


def step_of(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["kind"], sorted(event["joined"]), event["updated"], event["left"])


@pytest.mark.parametrize("details", [True, False], ids=["details", "minimal"])
async def test_page_member_list_follows_the_server(
        context: Any, clients: list[Client], details: bool) -> None:
    options = ServerOptions(heartbeat_interval=2, heartbeat_timeout=2, presence_details=details)
    async with RestartableServer(options) as lab:
        page: Page = await context.new_page()
        await open_page_client(page, lab.http_url, "watch")
        await page.evaluate("lab.c.subscribe('room')")
        hub = lab.current.hub

        async def check(expected: Members) -> None:
            # the server is there first (without details a closed tab changes nothing
            # the page can see, so wait for the server before looking at the page)
            await eventually(lambda: hub.presence("room") == expected)
            await page_shows(page, expected, details)

        one = {"connections": 1}
        await check({"watch": one})
        ada1 = await python_client(clients, lab.url, "ada")
        await check({"watch": one, "ada": one})
        ada2 = await python_client(clients, lab.url, "ada")  # a second tab
        await check({"watch": one, "ada": {"connections": 2}})
        await ada1.set_presence("room", state="busy", meta={"tab": 1})
        busy = {"state": "busy", "meta": {"tab": 1}}
        await check({"watch": one, "ada": {"connections": 2, **busy}})
        await ada2.close()
        await check({"watch": one, "ada": {"connections": 1, **busy}})
        await python_client(clients, lab.url, "bob")
        await check({"watch": one, "ada": {"connections": 1, **busy}, "bob": one})
        assert hub.kick("room", "bob") == 1
        await check({"watch": one, "ada": {"connections": 1, **busy}})
        tab2: Page = await context.new_page()  # a second tab of the page's user
        await open_page_client(tab2, lab.http_url, "watch")
        await tab2.evaluate("lab.c.subscribe('room')")
        await page_shows(tab2, {"watch": {"connections": 2}, "ada": {"connections": 1, **busy}},
                         details=True)  # a fresh presence_state is exact with either shape
        await check({"watch": {"connections": 2}, "ada": {"connections": 1, **busy}})
        await ada1.close()
        await check({"watch": {"connections": 2}})
        await tab2.evaluate("lab.c.close()")
        await check({"watch": one})

        events = [step_of(e) for e in await page.evaluate("lab.presence")]
        if details:
            assert events == [
                ("state", ["watch"], {}, {}),
                ("diff", ["ada"], {}, {}),
                ("diff", [], {"ada": ["connections"]}, {}),
                ("diff", [], {"ada": ["state", "meta"]}, {}),
                ("diff", [], {"ada": ["connections"]}, {}),
                ("diff", ["bob"], {}, {}),
                ("diff", [], {}, {"bob": "kicked"}),
                ("diff", [], {"watch": ["connections"]}, {}),
                ("diff", [], {}, {"ada": "closed"}),
                ("diff", [], {"watch": ["connections"]}, {}),
            ]
        else:
            assert events == [
                ("state", ["watch"], {}, {}),
                ("diff", ["ada"], {}, {}),
                ("diff", [], {"ada": ["state", "meta"]}, {}),
                ("diff", ["bob"], {}, {}),
                ("diff", [], {}, {"bob": None}),
                ("diff", [], {}, {"ada": None}),
            ]
        assert await page.evaluate("lab.errors") == []


async def test_a_kicked_page_forgets_the_channel(context: Any) -> None:
    async with RestartableServer(ServerOptions(presence_details=True)) as lab:
        page: Page = await context.new_page()
        await open_page_client(page, lab.http_url, "ada")
        await page.evaluate("lab.c.subscribe('room')")
        await page.evaluate("lab.c.setPresence('room', {state: 'busy'})")
        assert lab.current.hub.kick("room", "ada") == 1
        await wait_page(page, "lab.unsubscribed.length === 1")
        assert await page.evaluate("lab.unsubscribed") == [{"channel": "room",
                                                            "reason": "kicked"}]
        state = await page.evaluate("""({subs: lab.c.subscriptions, members: lab.c.members('room'),
                                          set: lab.c.presenceSet('room')})""")
        assert state == {"subs": [], "members": [], "set": None}
        await lab.restart()  # after a reconnection the kick is not undone
        await wait_page(page, "lab.c.reconnects === 1 && lab.c.state === 'open'")
        assert lab.current.channels() == []

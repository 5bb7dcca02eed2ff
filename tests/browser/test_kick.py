"""Chromium: the browser client after the server removes it from a channel, and a
channel unsubscribed while its resubscribe is in flight (as tests/client/test_kick.py
checks for the Python client).

* frames already queued for a channel when the server's ``unsubscribed`` notice
  (control priority) overtook them still arrive as events, but revive no recovery
  position and no member list;
* ``unsubscribe()`` while reconnecting, after the resubscribe reached the server,
  leaves the channel at the server before the client is OPEN again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.core.history import HistoryRule
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.testing import FaultProxy, RestartableServer

from .conftest import Page, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]

# without compression (Chromium offers it): the kick notice then overtakes queued frames
OPTIONS = ServerOptions(heartbeat_interval=2, heartbeat_timeout=2,
                        max_outbound_bytes=64 * 1024 * 1024,
                        compression=CompressionPolicy(enabled=False),
                        history=(HistoryRule("room", size=1000, ttl=60),))


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context()
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    try:
        yield await context.new_page()
        assert errors == []
    finally:
        await context.close()


def subscribed_at(lab: RestartableServer, channel: str, session: str | None) -> bool:
    chan = lab.current.hub.channels.get(channel)
    return chan is not None and session in chan.subscribers


ORDER = """() => {
  lab.order = [];
  for (const type of ["message", "unsubscribed", "presence"]) {
    lab.c.on(type, () => lab.order.push(type));
  }
}"""


async def test_frames_the_kick_overtook_are_delivered_but_not_tracked(page: Page) -> None:
    async with RestartableServer(OPTIONS) as lab:
        await open_page_client(page, lab.http_url, "ada")
        await page.evaluate(ORDER)
        await page.evaluate("lab.c.subscribe('room')")
        await wait_page(page, "lab.c.members('room').includes('ada')")
        session = lab.current.hub.sessions[await page.evaluate("lab.c.welcome.session")]
        blob = "x" * 60_000
        for n in range(200):  # 12 MB queued in one loop turn, nothing written yet
            lab.current.publish("room", {"n": n, "blob": blob})
        assert lab.current.hub.set_member("room", "ada", state="busy") == ["state"]
        assert session.pending, "the frames wait in the server's queue (same loop turn)"
        assert lab.current.hub.kick("room", "ada") == 1
        await wait_page(page, "lab.order.includes('unsubscribed') && lab.got.length === 200")
        order = await page.evaluate("lab.order")
        after = order[order.index("unsubscribed"):]
        assert after.count("message") > 0, f"the notice did not overtake queued messages: {order}"
        state = await page.evaluate("""() => ({subs: lab.c.subscriptions,
            positions: [...lab.c.positions.keys()], presence: [...lab.c.presence.keys()],
            members: lab.c.members('room')})""")
        assert state == {"subs": [], "positions": [], "presence": [], "members": []}, \
            "a straggler revived the recovery position or the member list"


async def test_unsubscribed_while_its_resubscribe_is_in_flight_is_left_at_the_server(
        page: Page) -> None:
    async with RestartableServer(OPTIONS) as lab, FaultProxy(lab.port) as proxy:
        await open_page_client(page, proxy.url("", scheme="http"), "ada")
        await page.evaluate("Promise.all([lab.c.subscribe('room'), lab.c.subscribe('lobby')])")
        proxy.refuse = True
        await lab.restart()
        unsubscribed: list[asyncio.Future[Any]] = []
        loop = asyncio.get_running_loop()

        def unsubscribe_now(event: Any) -> None:
            # the server took the resubscribe; its reply is still in the slow proxy
            if event.channel == "room" and not unsubscribed:
                unsubscribed.append(loop.create_task(page.evaluate(
                    "(async () => { const s = lab.c.state; await lab.c.unsubscribe('room');"
                    " return s; })()")))

        lab.current.on("channel.subscribed", unsubscribe_now)
        proxy.delay = 0.3
        proxy.refuse = False
        await wait_page(page, "lab.reconnected.length >= 1 && lab.c.state === 'open'")
        assert unsubscribed, "the resubscribe never reached the server"
        assert await asyncio.wait_for(unsubscribed[0], 5) == "connecting", \
            "not unsubscribed during the restore"
        session = await page.evaluate("lab.c.welcome.session")
        assert await page.evaluate("lab.c.subscriptions") == ["lobby"]
        assert subscribed_at(lab, "lobby", session)
        assert not subscribed_at(lab, "room", session), "left subscribed at the server"

"""Chromium: the browser client recovers what it missed on a history channel.

A page loads /static/realtime-lab.js from a real server (through the fault proxy),
subscribes to a history channel, is cut off, and Python publishes while it is down.
History lives in the server process, so a proxy cut keeps it (complete recovery,
or incomplete when the history is smaller than the gap); a server restart loses
it (a new epoch: incomplete, nothing replayed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.core.history import HistoryRule
from realtime_lab.testing import FaultProxy, RestartableServer

from .conftest import Page, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]
GAP = 200  # published while the page is down
DURING = 200  # published while it reconnects


def lab_options(history_size: int) -> ServerOptions:
    return ServerOptions(heartbeat_interval=2, heartbeat_timeout=2,
                         history=(HistoryRule("feed", size=history_size, ttl=60),))


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == []
    finally:
        await context.close()


async def subscribed_with_ten(page: Page, lab: RestartableServer, origin: str) -> None:
    """Connect the page (via ``origin``), subscribe to feed and receive 0..9 live."""
    await open_page_client(page, origin, "reader")
    await page.evaluate("lab.c.subscribe('feed')")
    for i in range(10):
        lab.current.publish("feed", i)
    await wait_page(page, "lab.got.length >= 10")


async def cut_off(page: Page, proxy: FaultProxy) -> None:
    """Cut the page's connection; new connections are refused until ``proxy.refuse`` ends."""
    proxy.refuse = True
    proxy.cut()
    await wait_page(page, "lab.c.state === 'reconnecting'")


async def until_end(page: Page, lab: RestartableServer) -> list[Any]:
    """Publish "end" and wait until the page has it; return every message it got."""
    lab.current.publish("feed", "end")
    await wait_page(page, "lab.got.length > 0 && lab.got[lab.got.length - 1] === 'end'")
    return list(await page.evaluate("lab.got"))


async def test_page_recovers_every_missed_message_once_in_order(page: Page) -> None:
    async with RestartableServer(lab_options(2 * (GAP + DURING))) as lab, \
            FaultProxy(lab.port) as proxy:
        await subscribed_with_ten(page, lab, proxy.url("", scheme="http"))
        await cut_off(page, proxy)
        for i in range(10, 10 + GAP):  # the page is down
            lab.current.publish("feed", i)
        proxy.refuse = False
        for i in range(10 + GAP, 10 + GAP + DURING):  # the page reconnects meanwhile
            lab.current.publish("feed", i)
            if i % 10 == 0:
                await asyncio.sleep(0.005)  # pacing the publisher, not a synchronization
        await wait_page(page, "lab.c.state === 'open' && lab.flags.length === 1")
        got = await until_end(page, lab)
        assert got == [*range(10 + GAP + DURING), "end"]  # every message, once, in order
        offsets = await page.evaluate("lab.offsets")
        assert offsets == list(range(1, len(got) + 1))
        flags = await page.evaluate("lab.flags")
        assert len(flags) == 1 and flags[0]["complete"] is True
        assert flags[0]["count"] >= GAP  # at least the messages published while down
        assert await page.evaluate("lab.c.reconnects") == 1
        assert await page.evaluate("lab.errors") == []


async def test_page_sees_incomplete_recovery_when_history_is_smaller_than_the_gap(
        page: Page) -> None:
    size = 50
    async with RestartableServer(lab_options(size)) as lab, FaultProxy(lab.port) as proxy:
        await subscribed_with_ten(page, lab, proxy.url("", scheme="http"))
        await cut_off(page, proxy)
        for i in range(10, 10 + GAP):
            lab.current.publish("feed", i)
        proxy.refuse = False
        await wait_page(page, "lab.c.state === 'open' && lab.flags.length === 1")
        got = await until_end(page, lab)
        missed_kept = list(range(10 + GAP - size, 10 + GAP))  # what the history still had
        assert got == [*range(10), *missed_kept, "end"]
        flags = await page.evaluate("lab.flags")
        assert len(flags) == 1
        assert flags[0]["complete"] is False and flags[0]["count"] == size
        # the page goes on from the server's position: the live message is the next offset
        assert await page.evaluate("lab.offsets.at(-1)") == 10 + GAP + 1
        assert await page.evaluate("lab.c.positions.get('feed').offset") == 10 + GAP + 1


async def test_page_sees_incomplete_recovery_after_a_server_restart(page: Page) -> None:
    """A restart loses the history (new epoch): nothing replayed, complete false."""
    async with RestartableServer(lab_options(1000)) as lab:
        await subscribed_with_ten(page, lab, lab.http_url)
        old_epoch = await page.evaluate("lab.c.positions.get('feed').epoch")
        await lab.restart()  # 1001: the page reconnects at once
        await wait_page(page, "lab.c.state === 'open' && lab.flags.length === 1")
        for i in range(3):
            lab.current.publish("feed", f"after-{i}")
        got = await until_end(page, lab)
        assert got == [*range(10), "after-0", "after-1", "after-2", "end"]
        flags = await page.evaluate("lab.flags")
        assert flags[0]["complete"] is False and flags[0]["count"] == 0
        assert flags[0]["epoch"] != old_epoch
        position = await page.evaluate("lab.c.positions.get('feed')")
        assert position == {"offset": 4, "epoch": flags[0]["epoch"]}

"""Chromium: the browser client in counts mode (issue 16 point 2; docs/presence.md).

* A counts channel: the page shows the exact member count from ``presence_count``
  (``presenceCount()``, "count" presence events) and never a member list.
* A full channel that passes its member limit: the page gets one ``presence_mode``,
  drops its member list ("mode" event, every member reported gone) and follows the
  count from then on.
"""

from __future__ import annotations

from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, ServerOptions
from realtime_lab.core.authz import ChannelRule
from realtime_lab.testing import RestartableServer

from .conftest import Page, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(120)]


async def test_the_page_shows_the_count_of_a_counts_channel_and_a_fallback(
        context: Any) -> None:
    options = ServerOptions(channel_rules=(ChannelRule("crowd-*", presence="counts"),),
                            presence_full_limit=2, presence_count_interval=0.1)
    clients: list[Client] = []
    async with RestartableServer(options) as lab:
        page: Page = await context.new_page()
        await open_page_client(page, lab.http_url, "browser")
        await page.evaluate("lab.c.subscribe('crowd-1')")
        await page.evaluate("lab.c.subscribe('room')")
        try:
            for i in range(5):
                client = await realtime_lab.connect(lab.url, user=f"u{i}")
                clients.append(client)
                await client.subscribe("crowd-1")
            await wait_page(page, "lab.c.presenceCount('crowd-1') === 6")
            assert await page.evaluate("lab.c.presenceMode('crowd-1')") == "counts"
            assert await page.evaluate("lab.c.presence.has('crowd-1')") is False
            for client in clients[:2]:
                await client.close()
            await wait_page(page, "lab.c.presenceCount('crowd-1') === 4")

            # room is full mode up to 2 members: the page and one more; a third passes it
            await clients[2].subscribe("room")
            await wait_page(page, "lab.c.members('room').length === 2")
            assert await page.evaluate("lab.c.presenceMode('room')") == "full"
            await clients[3].subscribe("room")
            await wait_page(page, "lab.c.presenceMode('room') === 'counts'")
            assert await page.evaluate("lab.c.presenceCount('room')") == 3
            assert await page.evaluate("lab.c.members('room')") == []
            events = await page.evaluate("lab.presence.filter((e) => e.channel === 'room')")
            mode = [e for e in events if e["kind"] == "mode"]
            assert len(mode) == 1 and mode[0]["mode"] == "counts" and mode[0]["count"] == 3
            assert sorted(mode[0]["left"]) == ["browser", "u2"]
            await clients[4].subscribe("room")
            await wait_page(page, "lab.c.presenceCount('room') === 4")
            after = await page.evaluate(
                "lab.presence.filter((e) => e.channel === 'room').map((e) => e.kind)")
            assert after[after.index("mode"):] == ["mode", "count"], after
            assert await page.evaluate("lab.errors") == []
        finally:
            for client in clients:
                await client.close()

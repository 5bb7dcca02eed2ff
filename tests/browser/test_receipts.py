"""Chromium: the browser client reports latency receipts to a recording server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime_lab.testing import RestartableServer

from .conftest import Page, eventually, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


async def test_page_fills_the_latency_table(page: Page, lab: RestartableServer) -> None:
    rec = lab.current.record()
    try:
        await open_page_client(page, lab.http_url, "reader")
        assert await page.evaluate("lab.c.welcome.receipts.max_samples") > 0
        await page.evaluate("lab.c.subscribe('room')")
        for i in range(100):
            lab.current.publish("room", i)
        await wait_page(page, "lab.got.length >= 100")
        await eventually(lambda: len(rec.tables["latency"]) == 100)
        latency = rec.to_frame("latency")
        assert set(latency["channel"]) == {"room"}
        assert latency["latency_ms"].between(-50, 5000).all()
        assert await page.evaluate("lab.errors.length") == 0
    finally:
        rec.stop()


async def test_receipts_off_sends_nothing(page: Page, lab: RestartableServer) -> None:
    rec = lab.current.record()
    try:
        await open_page_client(page, lab.http_url, "quiet", receipts=False)
        await page.evaluate("lab.c.subscribe('room')")
        lab.current.publish("room", 1)
        await wait_page(page, "lab.got.length >= 1")
        await page.wait_for_timeout(700)
        assert len(rec.tables["latency"]) == 0
    finally:
        rec.stop()

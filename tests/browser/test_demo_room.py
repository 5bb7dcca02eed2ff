"""Two Chromium pages in the demo room: presence, messages, and a server restart."""

from __future__ import annotations

import re
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.testing import FaultProxy, RestartableServer

from .conftest import ARTIFACTS, Page, eventually, expect, needs_playwright

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]
TIMEOUT_MS = 10_000


async def join(page: Page, base: str, name: str) -> None:
    await page.goto(f"{base}/?room=lab")
    await page.fill("#name", name)
    await page.click("#join")
    await expect(page.locator("body")).to_have_attribute("data-joined", "yes", timeout=TIMEOUT_MS)
    await expect(page.locator("#state")).to_have_attribute("data-state", "open")


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def sees_message(page: Page, sender: str, text: str) -> None:
    line = page.locator("#messages li", has_text=text)
    await expect(line).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(line.locator(".from")).to_have_text(sender)


async def sees_member(page: Page, user: str) -> None:
    await expect(page.locator(f'#members li[data-user="{user}"]')).to_be_visible(
        timeout=TIMEOUT_MS)


async def screenshot_on_failure(pages: dict[str, Page], test: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name, page in pages.items():
        await page.screenshot(path=str(ARTIFACTS / f"{test}-{name}.png"), full_page=True)


async def test_two_pages_chat_and_survive_a_restart(browser: Any, lab: RestartableServer) -> None:
    context = await browser.new_context()
    pages = {"ada": await context.new_page(), "bob": await context.new_page()}
    errors: list[str] = []
    for page in pages.values():
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    ada, bob = pages["ada"], pages["bob"]
    try:
        js = await ada.request.get(f"{lab.http_url}/static/realtime-lab.js")
        assert js.ok and "javascript" in js.headers["content-type"]

        await join(ada, lab.http_url, "ada")
        await join(bob, lab.http_url, "bob")
        await sees_member(ada, "bob")
        await sees_member(bob, "ada")
        await say(ada, "hello from ada")
        await sees_message(bob, "ada", "hello from ada")
        await say(bob, "hello from bob")
        await sees_message(ada, "bob", "hello from bob")

        await lab.restart()  # same port: both pages get 1001 and reconnect

        for page in (ada, bob):
            await expect(page.locator("#reconnects")).to_have_text("1", timeout=TIMEOUT_MS)
            await expect(page.locator("#state")).to_have_attribute("data-state", "open")
            await expect(page.locator("#log")).to_contain_text(re.compile(r"code 1001"))
        channels = {c["name"]: c["subscribers"] for c in lab.current.channels()}
        assert channels == {"lab": 2}  # resubscribed, once each
        await sees_member(ada, "bob")
        await sees_member(bob, "ada")
        await say(bob, "still here after the restart")
        await sees_message(ada, "bob", "still here after the restart")
        await say(ada, "me too")
        await sees_message(bob, "ada", "me too")
        assert errors == []
    except BaseException:
        await screenshot_on_failure(pages, "two_pages")
        raise
    finally:
        await context.close()


async def test_browser_client_follows_the_same_rules(browser: Any, lab: RestartableServer) -> None:
    """The JS close-code table and backoff match the Python ones."""
    from realtime_lab.client import Backoff
    from realtime_lab.protocol import advice_for

    page = await browser.new_page()
    try:
        await page.goto(f"{lab.http_url}/")
        codes = [None, 1000, 1001, 1002, 1005, 1006, 1008, 1009, 1011, 1012, 1013,
                 4001, 4004, 4008, 4100, 4101, 4102, 4200, 4299, 4500]
        result = await page.evaluate("""async (codes) => {
            const m = await import("/static/realtime-lab.js");
            const ceilings = [1, 2, 3, 4, 5, 6, 7, 8].map(
                (a) => m.backoffDelay(a, {jitter: "none"}));
            const full = Array.from({length: 1000}, () => m.backoffDelay(3));
            return {advice: codes.map((c) => m.adviceFor(c)), ceilings,
                    fullMin: Math.min(...full), fullMax: Math.max(...full)};
        }""", codes)
        assert result["advice"] == [advice_for(c).value for c in codes]
        assert result["ceilings"] == [Backoff().ceiling(a) for a in range(1, 9)]
        assert 0 <= result["fullMin"] < 0.2 and 1.8 < result["fullMax"] <= 2.0
    finally:
        await page.close()


async def test_page_detects_a_half_open_connection(browser: Any) -> None:
    """Through a stalled proxy nothing arrives: the page's heartbeat notices and reconnects."""
    options = ServerOptions(heartbeat_interval=0.5, heartbeat_timeout=0.5)
    async with RestartableServer(options) as lab, FaultProxy(lab.port) as proxy:
        page = await browser.new_page()
        try:
            await join(page, proxy.url("", scheme="http"), "ada")  # page and socket via the proxy
            proxy.stall()
            await expect(page.locator("#log")).to_contain_text("heartbeat timeout",
                                                               timeout=TIMEOUT_MS)
            proxy.resume()
            await expect(page.locator("#reconnects")).to_have_text("1", timeout=TIMEOUT_MS)
            await expect(page.locator("#state")).to_have_attribute("data-state", "open")
            assert lab.current.channels()[0]["subscribers"] == 1
        except BaseException:
            await screenshot_on_failure({"ada": page}, "half_open")
            raise
        finally:
            await page.close()


async def test_browser_client_stops_on_4001_and_renews_its_token(browser: Any) -> None:
    """A refused token (4001) stops the JS client after one attempt; a token function works."""
    from realtime_lab.core.security import make_token

    options = ServerOptions(token_secret="s3cret")
    async with RestartableServer(options) as lab:
        tokens = [make_token("s3cret", "ada", ttl=60) for _ in range(3)]
        page = await browser.new_page()
        try:
            await page.goto(f"{lab.http_url}/")
            result = await page.evaluate("""async (tokens) => {
                const m = await import("/static/realtime-lab.js");
                const refused = new m.RealtimeClient(undefined,
                    {user: "ada", backoff: {initial: 0.01}});
                let error = null;
                try { await refused.connect(); } catch (e) { error = e.code; }
                await new Promise((r) => setTimeout(r, 300));
                const attempts = refused.history.filter((c) => c.state === "connecting").length;
                let asked = 0;
                const ok = new m.RealtimeClient(undefined,
                    {user: "ada", token: async () => tokens[asked++]});
                await ok.connect();
                await ok.subscribe("room");
                const state = ok.state;
                ok.close();
                return {error, attempts, last: refused.state, code: refused.closeCode,
                        asked, state};
            }""", tokens)
            assert result == {"error": 4001, "attempts": 1, "last": "closed", "code": 4001,
                              "asked": 1, "state": "open"}
        finally:
            await page.close()


async def test_demo_state_is_shown_to_others_and_kept_across_a_restart(
        browser: Any, lab: RestartableServer) -> None:
    """The room's state selector uses setPresence(); the state survives a restart."""
    context = await browser.new_context()
    pages = {"ada": await context.new_page(), "bob": await context.new_page()}
    ada, bob = pages["ada"], pages["bob"]
    try:
        await join(ada, lab.http_url, "ada")
        await join(bob, lab.http_url, "bob")
        await ada.select_option("#my-state", "away")
        ada_at_bob = bob.locator('#members li[data-user="ada"]')
        await expect(ada_at_bob).to_have_attribute("data-state", "away", timeout=TIMEOUT_MS)
        await expect(ada_at_bob).to_contain_text("away")
        await expect(bob.locator("#log")).to_contain_text("ada: state changed")

        await lab.restart()  # a new server: it knows nothing of ada's state
        for page in (ada, bob):
            await expect(page.locator("#reconnects")).to_have_text("1", timeout=TIMEOUT_MS)
        # the new server learns "away" only from ada's restore
        await eventually(lambda: lab.current.presence("lab").get("ada", {}).get("state")
                         == "away")
        await expect(ada_at_bob).to_have_attribute("data-state", "away", timeout=TIMEOUT_MS)
    except BaseException:
        await screenshot_on_failure(pages, "demo_state")
        raise
    finally:
        await context.close()

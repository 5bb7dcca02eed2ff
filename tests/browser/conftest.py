"""Real Chromium (Debian's package) driven by Playwright; never `playwright install`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.testing import RestartableServer

try:
    from playwright.async_api import Page, expect
    PLAYWRIGHT_MISSING = ""
except ImportError as exc:  # pragma: no cover - the test extra installs playwright
    if os.environ.get("CI") == "true":
        raise ImportError("the playwright package is missing: pip install -e '.[test]'") from exc
    Page = Any
    expect = None
    PLAYWRIGHT_MISSING = "the playwright package is missing: pip install -e '.[test]'"

#: Every browser test module carries this mark: skipped locally without playwright.
needs_playwright = pytest.mark.skipif(bool(PLAYWRIGHT_MISSING),
                                      reason=PLAYWRIGHT_MISSING or "playwright is installed")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    """A browser context; the test fails if a page of it had an uncaught error."""
    context = await browser.new_context()
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    try:
        yield context
        assert errors == []
    finally:
        await context.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    """A page of a running server's origin (/health), to import /static/*.js in it."""
    async with RestartableServer() as lab:
        page = await browser.new_page()
        try:
            await page.goto(f"{lab.http_url}/health")
            yield page
        finally:
            await page.close()


@pytest.fixture
async def lab() -> AsyncIterator[RestartableServer]:
    async with RestartableServer(ServerOptions(heartbeat_interval=2, heartbeat_timeout=2)) as srv:
        yield srv


# A page-side harness: one RealtimeClient per page, in `window.lab`, with what it saw.
HARNESS = """async ({url, user, options}) => {
  const m = await import("/static/realtime-lab.js");
  const c = new m.RealtimeClient(url || undefined, {user, ...options});
  const canon = (v) => Array.isArray(v) ? `[${v.map(canon).join(",")}]`
    : v && typeof v === "object"
      ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(",")}}`
      : JSON.stringify(v ?? null);
  const lab = {m, c, canon, got: [], offsets: [], flags: [], presence: [], errors: [],
               unsubscribed: [], reconnected: []};
  c.on("message", (msg) => { lab.got.push(msg.data); lab.offsets.push(msg.offset ?? null); });
  c.on("recovered", (flag) => lab.flags.push(flag));
  c.on("presence", (p) => lab.presence.push(JSON.parse(JSON.stringify(p))));
  c.on("error", (e) => lab.errors.push(e));
  c.on("unsubscribed", (u) => lab.unsubscribed.push(u));
  c.on("reconnected", (r) => lab.reconnected.push(r));
  window.lab = lab;
  await c.connect();
  return c.welcome.session;
}"""

FAST_BACKOFF = {"backoff": {"initial": 0.05, "maxDelay": 0.2, "jitter": "full"},
                "reconnectNowWindow": 0.05}


async def open_page_client(page: Any, origin: str, user: str, url: str | None = None,
                           **options: Any) -> str:
    """Load ``origin``/health, import /static/realtime-lab.js from it, connect a client.

    ``url``: the WebSocket endpoint (default: ws://<origin>/ws). Returns the session id.
    """
    await page.goto(f"{origin}/health")
    return str(await page.evaluate(HARNESS, {"url": url, "user": user,
                                             "options": {**FAST_BACKOFF, **options}}))


async def wait_page(page: Any, expression: str, arg: Any = None, timeout: float = 15) -> Any:
    """Wait (Playwright's wait_for_function, bounded) until ``expression`` is truthy."""
    handle = await page.wait_for_function(expression, arg=arg, timeout=timeout * 1000,
                                          polling=20)
    return await handle.json_value()


async def eventually(condition: Any, timeout: float = 10) -> None:
    """Wait until ``condition()`` holds on the server side (bounded, polled every 10 ms)."""
    import asyncio

    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)

"""Chromium: docs/howto/browser.md works as written.

The guide's page (its ```html block) is served from one origin with the client files
copied beside it (its step 1), and connects to a server on another port that allows
that origin (its step 2); the page must show the states, the room's members and its
own message coming back. The guide's addresses are replaced by the test's ports.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, StaticFileHandler

import realtime_lab

from .conftest import needs_playwright, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "howto" / "browser.md"
STATIC = ROOT / "realtime_lab" / "static"


def guide_page() -> str:
    m = re.search(r"^( *)```html\n(.*?)^\1```", GUIDE.read_text(), re.S | re.M)
    assert m, "docs/howto/browser.md has no html block"
    return textwrap.dedent(m.group(2))


async def test_the_guides_page_connects_across_origins(browser: Any, tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    for js in STATIC.glob("*.js"):  # step 1: the client files beside the page
        shutil.copy(js, tmp_path / "static")
    sockets = bind_sockets(0, "127.0.0.1")
    page_origin = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    http = HTTPServer(Application(
        [(r"/(.*)", StaticFileHandler, {"path": str(tmp_path), "default_filename": "index.html"})]))
    http.add_sockets(sockets)
    server = await realtime_lab.serve(port=0, allowed_origins=[page_origin])  # step 2
    try:
        html = guide_page()
        assert "ws://127.0.0.1:8765/ws" in html
        (tmp_path / "index.html").write_text(html.replace("ws://127.0.0.1:8765/ws", server.url))
        page = await browser.new_page()
        await page.goto(page_origin + "/")
        log = "() => [...document.querySelectorAll('#log li')].map((li) => li.textContent)"
        await wait_page(page, f"({log})().includes('ada: hello from the browser')")
        lines = await page.evaluate(log)
        assert "state: open" in lines
        assert "in room: ada" in lines
        assert server.presence("room").keys() == {"ada"}
    finally:
        await server.stop()
        http.stop()

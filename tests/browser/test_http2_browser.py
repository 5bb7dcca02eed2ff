"""Chromium loads the demo page over https with HTTP/2 and opens its WebSocket as a
stream of that same connection (RFC 8441): checked on the server side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.transports.http2 import H2Session, WebSocketStream

from .conftest import eventually, expect, needs_playwright

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(90)]
TIMEOUT_MS = 10_000


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[LabServer]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    server = await realtime_lab.serve(port=0, options=ServerOptions(
        http2=True, certfile=str(certfile), keyfile=str(keyfile)))
    try:
        yield server
    finally:
        await server.stop()


async def test_demo_page_websocket_on_the_pages_h2_connection(browser: Any,
                                                              tls_server: LabServer) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    try:
        response = await page.goto(f"{tls_server.http_url}/?room=lab")
        assert response is not None and response.ok
        assert await page.evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        await page.fill("#name", "ada")
        await page.click("#join")
        await expect(page.locator("body")).to_have_attribute("data-joined", "yes",
                                                             timeout=TIMEOUT_MS)
        await eventually(lambda: len(tls_server.hub.sessions) == 1)
        (session,) = tls_server.hub.sessions.values()
        port = session.port
        # The WebSocket is a stream (not the first) of an HTTP/2 connection over TLS...
        assert isinstance(port, WebSocketStream), type(port)
        h2 = port.h2
        assert isinstance(h2, H2Session) and port.stream_id > 1
        # ...the one that also served the page and its scripts (no second connection).
        assert h2.requests >= 3, h2.requests
        assert h2.remote == "127.0.0.1"
        # and it works both ways: the page's message comes back to it through the hub
        await page.fill("#text", "over h2")
        await page.click("#send")
        line = page.locator("#messages li", has_text="over h2")
        await expect(line).to_have_count(1, timeout=TIMEOUT_MS)
    finally:
        await context.close()

"""Chromium (it always offers permessage-deflate) with the browser client over both protocols."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

import realtime_lab

pytestmark = pytest.mark.browser

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: apt-get install chromium")
        pytest.skip("chromium is not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


SCRIPT = """async (url) => {
  const { RealtimeClient } = await import("/static/realtime-lab.js");
  const json = new RealtimeClient(url, { user: "js", protocol: "json", reconnect: false });
  const bin = new RealtimeClient(url, { user: "mp", protocol: "msgpack", reconnect: false });
  const got = { json: [], msgpack: [] };
  json.addEventListener("message", (e) => got.json.push(e.detail.data));
  bin.addEventListener("message", (e) => got.msgpack.push(e.detail.data));
  await json.connect(); await bin.connect();
  await json.subscribe("room"); await bin.subscribe("room");
  const text = "compress me please ".repeat(200);
  await bin.publish("room", { text, blob: new Uint8Array([0, 1, 254, 255]), n: -3, f: 1.25 });
  await json.publish("room", { text: "from json", blob: { "$bytes": "AAEC" } });
  const until = Date.now() + 5000;
  while ((got.json.length < 2 || got.msgpack.length < 2) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const show = (d) => ({ ...d, blob: d.blob instanceof Uint8Array ? Array.from(d.blob) : d.blob,
                          text: d.text.length });
  const out = { json: got.json.map(show), msgpack: got.msgpack.map(show),
                protocols: [json._ws.protocol, bin._ws.protocol],
                extensions: [json._ws.extensions, bin._ws.extensions] };
  return out;
}"""


async def test_chromium_json_and_msgpack_with_compression(page: Any) -> None:
    server = await realtime_lab.serve(port=0)
    try:
        await page.goto(server.http_url + "/health")
        out = await page.evaluate(SCRIPT, server.url)
        wires = sorted(s.wire.label() for s in server.hub.sessions.values())
    finally:
        await server.stop()
    assert out["protocols"] == ["", "realtime-lab.v1.msgpack"]
    assert all("permessage-deflate" in ext for ext in out["extensions"])
    assert wires == ["json+deflate", "msgpack+deflate"]
    first = {"text": 3800, "n": -3, "f": 1.25}
    assert out["msgpack"][0] == first | {"blob": [0, 1, 254, 255]}  # raw bytes
    assert out["json"][0] == first | {"blob": {"$bytes": "AAH+/w=="}}  # base64 object
    assert out["msgpack"][1] == {"text": 9, "blob": [0, 1, 2]}
    assert out["json"][1] == {"text": 9, "blob": {"$bytes": "AAEC"}}

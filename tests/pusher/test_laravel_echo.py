"""Laravel Echo (npm, over pusher-js) in Chromium, offline: both scripts come from
tests/pusher/js/node_modules and are added to a page of the server's own origin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pusher

import realtime_lab
from realtime_lab import LabServer, sign_channel_token
from realtime_lab.pusher import PusherApp

SETUP = """([key, port]) => {
  window.got = [];
  window.here = null;
  window.echo = new Echo.default({
    broadcaster: "pusher", key, cluster: "local", wsHost: "127.0.0.1", wsPort: port,
    forceTLS: false, enabledTransports: ["ws"], disableStats: true,
    authEndpoint: "/pusher/auth", auth: {headers: {"X-Test-User": "echo-user"}},
  });
  echo.channel("orders").listen(".created", (e) => got.push(["created", e]));
  echo.join("room")
    .here((users) => { window.here = users; })
    .joining((user) => got.push(["joining", user]))
    .leaving((user) => got.push(["leaving", user]))
    .listenForWhisper("typing", (e) => got.push(["whisper", e]));
}"""


async def until(page: Any, expression: str, timeout: float = 15.0) -> Any:
    await page.wait_for_function(expression, timeout=timeout * 1000)
    return await page.evaluate(expression)


async def test_laravel_echo_in_chromium(server: LabServer, app: PusherApp, browser: Any,
                                        js_modules: Path) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    await page.goto(f"{server.http_url}/health")
    await page.add_script_tag(path=str(js_modules / "pusher-js/dist/web/pusher.min.js"))
    await page.add_script_tag(path=str(js_modules / "laravel-echo/dist/echo.iife.js"))
    await page.evaluate(SETUP, [app.key, server.port])
    here = await until(page, "window.here")
    assert [u["name"] for u in here] == ["echo-user"]  # user_info, as Echo's here() gives it

    # a native client joins the presence channel: Echo's joining()
    native = await realtime_lab.connect(server.url, user="nia")
    try:
        assert native.session is not None
        token = sign_channel_token(str(server.options.channel_secret), native.session,
                                   "presence-room", member={"name": "Nia"})
        await native.subscribe("presence-room", auth=token)
        joined = await until(page, "got.find((g) => g[0] === 'joining')")
        assert joined[1] == {"name": "Nia"}

        # a server SDK event reaches Echo's listen(".created")
        sdk = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret,
                            host="127.0.0.1", port=server.port, ssl=False, timeout=5)
        await asyncio.to_thread(sdk.trigger, "orders", "created", {"order": 7})
        created = await until(page, "got.find((g) => g[0] === 'created')")
        assert created[1] == {"order": 7}

        # Echo's whisper is a client event: the native client gets it with its name
        await page.evaluate("echo.join('room').whisper('typing', {who: 'echo-user'})")
        msg = await native.recv_message("presence-room", timeout=10)
        assert msg["event"] == "client-typing" and msg["data"] == {"who": "echo-user"}
        await native.send({"type": "publish", "channel": "presence-room",
                           "event": "client-typing", "data": {"who": "nia"}})
        whisper = await until(page, "got.find((g) => g[0] === 'whisper')")
        assert whisper[1] == {"who": "nia"}
    finally:
        await native.close()
    left = await until(page, "got.find((g) => g[0] === 'leaving')")
    assert left[1] == {"name": "Nia"}
    assert errors == []
    await page.close()

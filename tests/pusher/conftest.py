"""Fixtures for the Pusher protocol tests: a server with one app, and real pusher-js.

pusher-js (and Laravel Echo) come from the npm registry, pinned in
tests/pusher/js/package.json and package-lock.json; ``make test`` runs ``npm ci``
there. Without node or the packages a test is skipped locally and fails in CI
(``CI=true``) with what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.pusher import PusherApp

JS_DIR = Path(__file__).parent / "js"
APP = PusherApp("1001", "lab-key", "lab-secret")
INSTALL_HINT = ("pusher-js is not installed: apt-get install nodejs npm, then "
                "npm ci --prefix tests/pusher/js (make test does it)")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(message: str) -> None:
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def node_modules() -> Path:
    """tests/pusher/js/node_modules with pusher-js, installed with ``npm ci`` if needed."""
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed: apt-get install nodejs npm")
    modules = JS_DIR / "node_modules"
    if not (modules / "pusher-js" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            _missing(INSTALL_HINT)
        assert npm is not None
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            _missing(f"{INSTALL_HINT}\nnpm ci failed: {done.stderr[-400:]}")
    return modules


def auth_decision(handler: Any, socket_id: str, channel: str) -> Any:
    """The test app's auth endpoint: the user comes in ``X-Test-User`` (pusher-js sends
    it as a header); ``deny`` is refused."""
    user = handler.request.headers.get("X-Test-User", "")
    if user == "deny":
        return False
    if channel.startswith("presence-"):
        return {"user_id": user or socket_id, "user_info": {"name": user or "anon"}}
    return True


def user_decision(handler: Any, socket_id: str) -> Any:
    """The test app's user sign-in: the user in ``X-Test-User``; ``deny`` is refused."""
    user = handler.request.headers.get("X-Test-User", "")
    return None if user in ("", "deny") else {"id": user, "name": user.title()}


#: Native clients join private and presence channels with tokens signed with it.
NATIVE_SECRET = "native-channel-secret"


@pytest.fixture
def app() -> PusherApp:
    return APP


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(pusher_apps=(APP,), pusher_auth=auth_decision,
                         pusher_user_auth=user_decision, channel_secret=NATIVE_SECRET)


class PusherJs:
    """One Node process running tests/pusher/js/driver.js: real pusher-js clients."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.version = ""

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self._changed.set()

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def expect(self, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first event (not returned before) whose fields equal ``match``."""
        return await self.expect_where(lambda e: all(e.get(k) == v for k, v in match.items()),
                                       timeout, repr(match))

    async def expect_where(self, predicate: Callable[[dict[str, Any]], bool],
                           timeout: float = 10.0, what: str = "") -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if not event.get("_seen") and predicate(event):
                    event["_seen"] = True
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0 or self._reader.done():
                raise AssertionError(f"pusher-js never sent {what}; got {self.events[-20:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def seen(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if all(e.get(k) == v for k, v in match.items())]

    async def connect(self, client: str, server: LabServer, *, user: str = "",
                      key: str = APP.key) -> str:
        self.send(op="connect", id=client, key=key, port=server.port, user=user)
        return str((await self.expect(id=client, kind="connected"))["socket_id"])

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def pusher_js() -> AsyncIterator[PusherJs]:
    node_modules()
    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "driver.js"), cwd=JS_DIR, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    js = PusherJs(proc)
    try:
        js.version = str((await js.expect(kind="ready"))["version"])
        yield js
    finally:
        await js.close()


@pytest.fixture
def js_modules() -> Path:
    """tests/pusher/js/node_modules (installed with npm ci when missing)."""
    return node_modules()

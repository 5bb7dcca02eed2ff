"""Shared fixtures: a server on 127.0.0.1 port 0, a client factory, a raw WebSocket client.

``raw_ws`` opens a hand-made WebSocket connection on a plain non-blocking socket:
it reads only when a test asks it to, never answers pings by itself, and can set a
small receive buffer, so tests can play a client that stops reading or is dead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_CLOSE, OP_TEXT, Frame, parse_frames


@pytest.fixture
def options() -> ServerOptions:
    """Override in a test module to start the server with other options."""
    return ServerOptions()


@pytest.fixture
async def server(options: ServerOptions) -> AsyncIterator[LabServer]:
    srv = await realtime_lab.serve(port=0, options=options)
    try:
        yield srv
    finally:
        await srv.stop()


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect(server: LabServer) -> AsyncIterator[ClientFactory]:
    """``await connect(user="ada")`` opens a client to the test server; all close at the end."""
    clients: list[Client] = []

    async def factory(**kwargs: object) -> Client:
        client = await realtime_lab.connect(server.url, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


WaitUntil = Callable[..., Awaitable[None]]


async def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                      what: str = "condition") -> None:
    """Poll ``predicate`` on the event loop until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def wait_until() -> WaitUntil:
    """``await wait_until(lambda: cond, timeout=5, what="...")`` or fail the test."""
    return _wait_until


class RawWebSocket:
    """A minimal client-side WebSocket on a raw socket, driven by the test."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.buffer = buffered
        self.frames: list[Frame] = []
        self.cursor = 0
        self.eof = False

    @classmethod
    async def open(cls, port: int, *, path: str = "/ws", rcvbuf: int | None = None,
                   timeout: float = 5.0, subprotocol: str | None = None) -> RawWebSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   + (f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else "")
                   + "\r\n")
        await loop.sock_sendall(sock, request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
            if not chunk:
                raise ConnectionError(f"server closed during the handshake: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionError(f"handshake refused: {head!r}")
        return cls(sock, rest)

    async def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Send one masked frame (clients must mask); ``fin=False`` starts a fragmented one."""
        await self.send_bytes(self.client_frame(opcode, payload, fin=fin))

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes (e.g. many frames from :meth:`client_frame` in one write)."""
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    @staticmethod
    def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
        """One masked client frame, as bytes."""
        mask = os.urandom(4)
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = bytes((first, 0x80 | length))
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_frame(OP_TEXT, json.dumps(message).encode())

    async def send_close(self, code: int = 1000) -> None:
        await self.send_frame(OP_CLOSE, struct.pack("!H", code))

    async def _read_more(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self.eof:
            raise ConnectionError("connection closed before the expected frame")
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError("the expected frame did not arrive in time")
        chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), remaining)
        if not chunk:
            self.eof = True
        self.buffer += chunk
        frames, self.buffer = parse_frames(self.buffer)
        self.frames.extend(frames)

    async def read_until(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """Read until a frame after the cursor matches ``predicate``; return it.

        Every frame read is kept in ``self.frames``; the cursor moves past the match.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        frames, self.buffer = parse_frames(self.buffer)
        self.frames.extend(frames)
        while True:
            while self.cursor < len(self.frames):
                frame = self.frames[self.cursor]
                self.cursor += 1
                if predicate(frame):
                    return frame
            await self._read_more(deadline)

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text frame, decoded (other frames are skipped but kept)."""
        frame = await self.read_until(lambda f: f.opcode == OP_TEXT, timeout)
        return json.loads(frame.payload)

    async def read_close(self, timeout: float = 5.0) -> int:
        """Read until the server's close frame; return its code."""
        frame = await self.read_until(lambda f: f.opcode == OP_CLOSE, timeout)
        (code,) = struct.unpack("!H", frame.payload[:2])
        return code

    def close(self) -> None:
        self.sock.close()


RawFactory = Callable[..., Awaitable[RawWebSocket]]


@pytest.fixture
async def raw_ws() -> AsyncIterator[RawFactory]:
    """``await raw_ws(server.port, rcvbuf=4096)`` opens a :class:`RawWebSocket`."""
    opened: list[RawWebSocket] = []

    async def factory(port: int, **kwargs: Any) -> RawWebSocket:
        ws = await RawWebSocket.open(port, **kwargs)
        opened.append(ws)
        return ws

    yield factory
    for ws in opened:
        ws.close()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI no test may skip: a skip there means a tool is missing, so fail the run
    and print each skip's reason (which says what to install)."""
    if not _in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    reporter.write_line(f"CI: {len(skipped)} test(s) skipped; in CI that is a failure:", red=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reporter.write_line(f"  {report.nodeid}: {reason}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: Flags for Debian's Chromium here (no sandbox as root, no background networking
#: on a closed network); the ``browser`` fixture launches it with them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    """Path of Debian's chromium; skip locally, fail in CI when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright (tests/browser, tests/pusher's Laravel Echo)."""
    path = chromium_path()
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        if os.environ.get("CI") == "true":
            pytest.fail("the playwright package is missing: pip install -e '.[test]'")
        pytest.skip("the playwright package is missing")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()

"""DNS rebinding: a request whose ``Host`` is not this server's is refused with 403 (issue 13, 7).

A page on ``http://evil.example:PORT`` whose name the attacker re-points to
127.0.0.1 is same-origin with itself: its WebSocket upgrade carries
``Host: evil.example:PORT`` and ``Origin: http://evil.example:PORT`` (and
``Sec-Fetch-Site: same-origin``), which Tornado accepts before ``check_origin``
runs, with or without an origin allow-list. A server bound to loopback now
answers only requests for loopback names and addresses (as Jupyter's server
does), and ``allowed_hosts`` names the others.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.transports.host_check import effective_allowed_hosts


async def status(port: int, path: str, host: str | None, *, origin: str | None = None,
                 upgrade: bool = False, extra: dict[str, str] | None = None) -> int:
    """Send one request with exactly these headers; return the response status."""
    lines = [f"GET {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"HTTP/1.1 "), line
        return int(line.split()[1])
    finally:
        writer.close()


async def rebinding_statuses(server: LabServer, name: str = "evil.example") -> list[int]:
    """What a rebinding page on ``name`` gets: the upgrade (plain, and with the
    Sec-Fetch-Site header browsers send), the HTTP API and the static page."""
    host = f"{name}:{server.port}"
    origin = f"http://{host}"
    return [
        await status(server.port, "/ws", host, origin=origin, upgrade=True),
        await status(server.port, "/ws", host, origin=origin, upgrade=True,
                     extra={"Sec-Fetch-Site": "same-origin"}),
        await status(server.port, "/api/channels", host, origin=origin),
        await status(server.port, "/health", host),
        await status(server.port, "/", host),
    ]


async def loopback_statuses(server: LabServer) -> list[int]:
    out = []
    for host in ("127.0.0.1", "localhost", "[::1]", "127.0.0.2", "LOCALHOST."):
        name = f"{host}:{server.port}"
        out.append(await status(server.port, "/ws", name, origin=f"http://{name}",
                                upgrade=True))
        out.append(await status(server.port, "/health", name))
    return out


@pytest.fixture
async def lab(request: pytest.FixtureRequest) -> Any:
    server = await realtime_lab.serve(port=0, **getattr(request, "param", {}))
    events = server.events("connection.refused")
    try:
        yield server, events
    finally:
        events.close()
        await server.stop()


def params(**opts: Any) -> Any:
    return pytest.mark.parametrize("lab", [opts], indirect=True)


@params()
async def test_default_server_refuses_a_rebinding_page(lab: Any) -> None:
    server, events = lab
    assert await rebinding_statuses(server) == [403] * 5
    refused = await events.wait_for("connection.refused", timeout=5)
    assert refused.code == 403 and refused.reason == "forbidden_host"
    assert set(await loopback_statuses(server)) == {101, 200}


@params(allowed_origins=("https://app.example.com",))
async def test_origin_allow_list_does_not_let_a_rebinding_page_in(lab: Any) -> None:
    server, _ = lab
    assert await rebinding_statuses(server) == [403] * 5
    assert set(await loopback_statuses(server)) == {101, 200}


@params(allowed_hosts=("rt.example.com", "*.lab.example.org"))
async def test_allowed_hosts_names_the_others(lab: Any) -> None:
    server, _ = lab
    assert await rebinding_statuses(server) == [403] * 5
    assert await rebinding_statuses(server, "rt.example.com") == [101, 101, 200, 200, 200]
    assert await rebinding_statuses(server, "a.lab.example.org") == [101, 101, 200, 200, 200]
    assert await rebinding_statuses(server, "lab.example.org.evil.io") == [403] * 5
    assert set(await loopback_statuses(server)) == {101, 200}


@params(allowed_hosts=("*",))
async def test_any_host_when_asked(lab: Any) -> None:
    server, _ = lab
    assert await rebinding_statuses(server) == [101, 101, 200, 200, 200]


class _FakeSocket:
    def __init__(self, address: str) -> None:
        self.address = address

    def getsockname(self) -> tuple[str, int]:  # what effective_allowed_hosts reads
        return (self.address, 1)


def test_default_allowed_hosts_follow_the_listening_addresses() -> None:
    loop: list[Any] = [_FakeSocket("127.0.0.1"), _FakeSocket("::1")]
    assert effective_allowed_hosts(None, loop) == ()  # loopback only: check, loopback names
    public: list[Any] = [_FakeSocket("127.0.0.1"), _FakeSocket("0.0.0.0")]
    assert effective_allowed_hosts(None, public) is None  # listens elsewhere: no check
    assert effective_allowed_hosts(("a.example",), public) == ("a.example",)
    assert ServerOptions(allowed_hosts="a.example").allowed_hosts == ("a.example",)

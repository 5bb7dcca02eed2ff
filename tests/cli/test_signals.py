"""SIGTERM and SIGINT stop ``realtime-lab serve`` and ``demo`` gracefully (real processes).

Clients get close code 1001 (going away), what the demo recorded is written, and
the process exits with status 0 within a bound. Before this, SIGTERM ended the
process at once: clients saw the TCP connection drop (no close code).
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

CliProcess = Any  # tests/cli/conftest.py: the ``cli_process`` fixture's class

STOP_BOUND = 10.0  # seconds from the signal to the exit of `serve` (close_timeout is 2 s)


async def open_client(url: str, user: str) -> WebSocketClientConnection:
    """A plain Tornado WebSocket client that has read its welcome."""
    conn = await websocket_connect(f"{url}?user={user}", connect_timeout=10)
    welcome = json.loads(str(await asyncio.wait_for(conn.read_message(), 10)))
    assert welcome["type"] == "welcome"
    return conn


async def close_code_of(conn: WebSocketClientConnection, timeout: float) -> tuple[Any, Any]:
    """Read until the server closes; return (close code, reason)."""
    async def drain() -> None:
        while await conn.read_message() is not None:
            pass

    await asyncio.wait_for(drain(), timeout)
    return conn.close_code, conn.close_reason


async def wait_exit(proc: CliProcess, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    code = await asyncio.get_running_loop().run_in_executor(
        None, lambda: proc.proc.wait(timeout=timeout))
    return code, time.monotonic() - started


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_stops_gracefully_on_signal(cli_process: type[CliProcess],
                                                sig: signal.Signals) -> None:
    proc = cli_process("serve", "--port", "0").start()
    clients = [await open_client(proc.ws_url, f"u{i}") for i in range(3)]
    clients[0].write_message(json.dumps({"type": "subscribe", "channel": "room", "id": 1}))
    assert json.loads(str(await asyncio.wait_for(clients[0].read_message(), 10)))["id"] == 1

    proc.proc.send_signal(sig)
    results = await asyncio.gather(*(close_code_of(c, STOP_BOUND) for c in clients))
    code, elapsed = await wait_exit(proc, STOP_BOUND)

    assert results == [(1001, "server stopping")] * 3
    assert code == 0, proc.stderr_if_exited()
    assert elapsed < STOP_BOUND
    assert f"stopped ({sig.name})" in proc.all_output()


def raw_websocket_that_never_reads(ws_url: str) -> socket.socket:
    """A client that completes the handshake and then never reads nor answers a close."""
    host, port = re.match(r"ws://([\d.]+):(\d+)/ws", ws_url).groups()  # type: ignore[union-attr]
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


async def test_a_second_signal_cuts_the_graceful_stop_short(
        cli_process: type[CliProcess]) -> None:
    # close_timeout 2 s would be waited for the silent client; the second signal skips it
    proc = cli_process("serve", "--port", "0").start()
    sock = raw_websocket_that_never_reads(proc.ws_url)
    try:
        proc.proc.send_signal(signal.SIGTERM)
        proc.read_until(re.compile("SIGTERM received: closing clients"), STOP_BOUND)
        proc.proc.send_signal(signal.SIGTERM)
        code, elapsed = await wait_exit(proc, STOP_BOUND)
    finally:
        sock.close()
    assert code == 1, proc.stderr_if_exited()
    assert "stopped without waiting for clients (second signal)" in proc.stderr_if_exited()
    assert elapsed < STOP_BOUND


@pytest.mark.slow
async def test_demo_stopped_by_sigterm_writes_what_it_recorded(
        cli_process: type[CliProcess], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli_process("demo", "--port", "0", "--duration", "120", "--clients", "4",
                       "--out", str(out)).start()
    watcher = await open_client(proc.ws_url, "watcher")
    deadline = time.monotonic() + 30
    while not any(ch["messages"] for ch in get_json(proc.http_url + "/api/channels")["channels"]):
        assert time.monotonic() < deadline, "the simulated clients published nothing in 30 s"
        await asyncio.sleep(0.1)

    proc.proc.send_signal(signal.SIGTERM)
    assert await close_code_of(watcher, 30) == (1001, "server stopping")
    code, elapsed = await wait_exit(proc, 60)
    assert code == 0, proc.stderr_if_exited()

    rows = list(csv.DictReader((out / "demo_metrics.csv").open()))
    assert rows and int(rows[-1]["published"]) > 0
    assert float(rows[-1]["t"]) < 100  # stopped early, not at the end of --duration
    assert (out / "demo_run" / "report.png").stat().st_size > 0
    assert (out / "demo_run" / "meta.json").exists()
    assert "stopped (SIGTERM)" in proc.all_output()

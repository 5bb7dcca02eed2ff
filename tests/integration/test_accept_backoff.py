"""File-descriptor exhaustion and pending connections at accept (issue 13, 5).

With every file descriptor in use, ``accept()`` fails with EMFILE while the
listening socket stays readable; Tornado's accept handler raised on every loop
turn (a traceback each time: 250,119 of them, 152 MB of log in 30 s, at 90% of
a core). The server now stops accepting for a moment (as nginx does), logs it
once per interval, and starts again when descriptors are free. Connections that
have not become WebSockets yet count against ``max_connections_per_ip``.

The exhaustion test runs ``realtime-lab serve`` in a child process with a small
``RLIMIT_NOFILE``, so the test runner itself never runs out of descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import realtime_lab

FD_LIMIT = 64
EXHAUST_SECONDS = 2.5


def _limit_descriptors() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextlib.contextmanager
def limited_server(log: Path) -> Iterator[tuple[int, psutil.Process]]:
    """``realtime-lab serve`` with ``FD_LIMIT`` descriptors; stderr (its log) to ``log``."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "realtime_lab.cli", "serve", "--port", "0",
             "--handshake-timeout", "60"],
            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_limit_descriptors)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"\(HTTP http://127\.0\.0\.1:(\d+)\)", line)
        assert match, f"unexpected first line: {line!r}; log: {log.read_text()[-2000:]}"
        yield int(match.group(1)), psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send half a request head and wait (each holds a
    descriptor in the server once accepted)."""
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        out.append(sock)
    return out


def health(port: int, timeout: float) -> bool:
    """Whether ``GET /health`` answers 200 within ``timeout`` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.mark.slow
def test_descriptor_exhaustion_pauses_accepting_logs_once_and_recovers(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with limited_server(log) as (port, proc):
        held = open_idle(port, FD_LIMIT + 16)  # more than the server can hold
        try:
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(EXHAUST_SECONDS)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            cpu_share = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
            text = log.read_text(errors="replace")
            lines = text.count("\n")
            assert "Too many open files" in text or "EMFILE" in text, text[-2000:]
            assert lines <= 5, f"{lines} log lines in {EXHAUST_SECONDS} s:\n{text[-3000:]}"
            assert cpu_share < 0.2, f"the server used {cpu_share:.0%} of a core while exhausted"
        finally:
            for sock in held:
                sock.close()
        # descriptors free again: the server answers within a few pause intervals
        deadline = time.monotonic() + 10
        while not health(port, 2):
            assert time.monotonic() < deadline, "the server did not serve again"
            time.sleep(0.1)
    print(f"\nexhausted for {EXHAUST_SECONDS} s: server CPU {cpu_share:.1%} of a core, "
          f"{lines} log lines")


async def test_pending_http_connections_count_against_the_per_ip_limit() -> None:
    limit = 3
    server = await realtime_lab.serve(port=0, max_connections_per_ip=limit,
                                      handshake_timeout=30)
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # limit + 1 connections that never finish their request head are held (the one
        # over the limit is let in: a WebSocket there is told why, with 4104)
        for _ in range(limit + 1):
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
            idle[-1][1].write(b"GET /ws HTTP/1.1\r\n")
        await asyncio.sleep(0.2)
        for reader, _writer in idle:
            assert not reader.at_eof()
        # one more from the same address is closed at once, before any byte is read
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # another address (all of 127/8 is loopback on Linux) is not affected
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.setblocking(False)
        await loop.sock_connect(other, ("127.0.0.1", server.port))
        await loop.sock_sendall(
            other, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        reply = await asyncio.wait_for(loop.sock_recv(other, 64), 5)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        other.close()
        # the idle ones go: room again for this address
        for _reader, w in idle:
            w.close()
        idle.clear()
        deadline = loop.time() + 5
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                         "\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if line.startswith(b"HTTP/1.1 200"):
                break
            assert loop.time() < deadline, "no room again after the idle connections closed"
            await asyncio.sleep(0.05)
    finally:
        for _reader, w in idle:
            w.close()
        await server.stop()

"""The join storm's processes: its Node.js load client and the server's counters.

Used by :mod:`benchmarks.join_storm`. The load client (``benchmarks/node/join_storm.js``)
prints a JSON line each time its crowd settles and answers a ``status`` line on stdin;
a realtime_lab server of ``benchmarks/servers`` answers a ``stats`` line with its
``hub.stats`` (``STATS {...}`` on stdout).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import IO, Any

from benchmarks.run import ROOT, Running
from benchmarks.servers import NODE_DIR

CLIENT = NODE_DIR / "join_storm.js"


def node_command() -> list[str] | str:
    """The argv prefix that runs the load client, or why it cannot run here."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (apt-get install nodejs)"
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return [node]
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip().lstrip("v")
    major = int(version.split(".")[0] or 0)
    if major >= 22:
        return [node]
    if major >= 20:
        return [node, "--experimental-websocket", "--no-warnings"]
    return (f"node {version} has no WebSocket client: install the ws package "
            "(npm ci --prefix benchmarks/node) or Node.js 20 or later")


def read_line(stream: IO[bytes], buffer: bytearray, deadline: float) -> str | None:
    """The next line of ``stream`` (a pipe), or None at the deadline or EOF."""
    fd = stream.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode(errors="replace")


class LoadClient:
    """The Node.js crowd: started on a port, read for ``settled`` lines."""

    def __init__(self, command: list[str], port: int, clients: int, presence: bool) -> None:
        argv = [*command, str(CLIENT), "--port", str(port), "--clients", str(clients)]
        self.proc = subprocess.Popen([*argv, *(["--presence"] if presence else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT)
        self.buffer = bytearray()

    def settled(self, phase: int, timeout: float) -> dict[str, Any]:
        """The client's report when the crowd of ``phase`` settled; RuntimeError after
        ``timeout`` seconds (with where the crowd was)."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        deadline = time.monotonic() + timeout
        while True:
            line = read_line(self.proc.stdout, self.buffer, deadline)
            if line is None:
                break
            event = json.loads(line)
            if event.get("event") == "settled" and event["phase"] == phase:
                return event
        status = "no status"
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(b"status\n")
            self.proc.stdin.flush()
            status = read_line(self.proc.stdout, self.buffer, time.monotonic() + 5) or status
        raise RuntimeError(f"not settled within {timeout:.0f} s: {status}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def load_client(command: list[str], port: int, clients: int,
                presence: bool) -> Iterator[LoadClient]:
    client = LoadClient(command, port, clients, presence)
    try:
        yield client
    finally:
        client.close()


def server_stats(srv: Running, timeout: float = 10.0) -> dict[str, Any]:
    """A realtime_lab server's ``hub.stats`` (its ``stats`` line on stdin)."""
    proc = srv.proc
    assert proc is not None and proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"stats\n")
    proc.stdin.flush()
    buffer = bytearray()
    deadline = time.monotonic() + timeout
    while (line := read_line(proc.stdout, buffer, deadline)) is not None:
        if line.startswith("STATS "):
            stats: dict[str, Any] = json.loads(line[6:])
            return stats
    raise RuntimeError("the server did not report its stats")


def stats_line(srv: Running) -> str:
    """A failed storm's server counters (realtime_lab only), for the error message."""
    try:
        stats = server_stats(srv)
    except (RuntimeError, OSError, ValueError, AssertionError):
        return "no stats"
    keys = ("sessions", "deliveries", "slow_consumers", "dropped", "connections_closed")
    return ", ".join(f"{k} {stats[k]}" for k in keys if k in stats)

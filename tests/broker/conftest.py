"""Fixtures for the broker tests: a real redis-server, server processes, waiting helpers.

``redis`` starts Debian's ``/usr/bin/redis-server`` on a free 127.0.0.1 port in a
temporary directory (no persistence) and kills it at the end. Without the binary
the Redis tests are skipped locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, LabServer
from realtime_lab.broker import Broker, InMemoryBus

REPO = Path(__file__).resolve().parents[2]
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One redis-server on 127.0.0.1, restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # polling the port, bounded by the deadline
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _need_redis() -> None:
    if not os.path.exists(REDIS_BIN):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is missing; in CI install it with "
                        "`apt-get install redis-server` (.ci/run does)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="pip install 'realtime_lab[redis]'")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server for one test."""
    _need_redis()
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> float:
    """Wait until ``predicate()`` holds; return the seconds it took. Fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the timeout
    return loop.time() - start


async def presence_diffs(client: Any) -> list[dict[str, Any]]:
    """The presence diffs among the messages the client has received (and any in 0.2 s)."""
    out = []
    while True:
        try:
            msg = await client.recv(0.2)
        except TimeoutError:
            return out
        if msg["type"] == "presence_diff":
            out.append(msg)


def about(diffs: list[dict[str, Any]], user: str) -> list[str]:
    """The joins and leaves of ``user`` in a client's presence diffs, in order."""
    out = []
    for diff in diffs:
        if user in diff.get("joins", {}) and user not in diff.get("changed", {}):
            out.append("join")
        if user in diff.get("leaves", {}):
            out.append("leave")
    return out


class NodeProcess:
    """``python -m realtime_lab.cli serve --port 0 --broker URL`` in its own process
    (or, with ``args``, ``python tests/broker/node_main.py URL *args``)."""

    def __init__(self, broker: str, log: Path, args: tuple[str, ...] = ()) -> None:
        self.broker = broker
        self.log = log
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.http_url = ""

    async def start(self) -> NodeProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [str(Path(__file__).with_name("node_main.py")), self.broker, *self.args] \
            if self.args else ["-m", "realtime_lab.cli", "serve", "--port", "0",
                               "--broker", self.broker]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=str(REPO), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=self.log.open("wb"))
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)
        match = re.search(rb"serving (ws://\S+) \(HTTP (http://\S+)\)", line)
        if match is None:
            raise RuntimeError(f"node did not start: {line!r}; see {self.log}")
        self.url, self.http_url = match.group(1).decode(), match.group(2).decode()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


NodeFactory = Callable[..., Awaitable[NodeProcess]]


@pytest.fixture
async def node_process(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """``await node_process(broker_url, *args)`` starts a server process (``args``: see
    node_main.py); all stop at the end."""
    nodes: list[NodeProcess] = []

    async def factory(broker: str, *args: str) -> NodeProcess:
        node = NodeProcess(broker, tmp_path / f"node{len(nodes)}.log", args)
        nodes.append(node)
        return await node.start()

    yield factory
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.stop()


# ---------------------------------------------------------------------- nodes in this process

NODE_TTL = 1.5
StartNodes = Callable[..., Awaitable[list[LabServer]]]
Connect = Callable[..., Awaitable[Client]]


@pytest.fixture(params=["memory", "redis"])
def new_broker(request: pytest.FixtureRequest) -> Callable[[], Broker | InMemoryBus]:
    """A factory of one node's broker: on a shared InMemoryBus, or on a fresh redis-server."""
    if request.param == "memory":
        bus = InMemoryBus(node_ttl=NODE_TTL)
        return lambda: bus
    redis = request.getfixturevalue("redis")
    from realtime_lab.broker.redis import RedisBroker

    return lambda: RedisBroker(redis.url, node_ttl=NODE_TTL, op_timeout=2.0)


@pytest.fixture
async def start_nodes(new_broker: Callable[[], Any]) -> AsyncIterator[StartNodes]:
    """``await start_nodes(n, **options)``: n servers (127.0.0.1, port 0) on the broker."""
    servers: list[LabServer] = []

    async def start(n: int, **options: Any) -> list[LabServer]:
        for _ in range(n):
            servers.append(await realtime_lab.serve(broker=new_broker(), **options))
        return servers[-n:]

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await clients(server, user, *channels)``: a connected client; all closed at the end."""
    made: list[Client] = []

    async def connect(server: LabServer, user: str, *channels: str) -> Client:
        client = await realtime_lab.connect(server.url, user=user)
        made.append(client)
        for channel in channels:
            await client.subscribe(channel)
        return client

    yield connect
    for client in made:
        await client.close()

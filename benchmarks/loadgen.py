"""The load generator: a minimal asyncio WebSocket client that only counts frames.

Runs in its own process (``python -m benchmarks.loadgen fanout|idle ...``) and
prints one JSON object on stdout. It reads the server's CPU and RSS from the OS
(psutil, by pid) at the edges of the measured phase, and its own CPU with
``time.process_time()``, so a reader can check it was not the bottleneck.

The client is hand-written on ``asyncio.Protocol`` (no WebSocket library):
HTTP/1.1 upgrade, masked client frames, and a frame reader that walks frame
headers in the receive buffer and counts text frames starting with
``{"type":"message"`` without decoding them. Pings are answered with pongs.
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

HOST = "127.0.0.1"
PATH = "/ws"
CHANNEL = "bench"
MESSAGE_PREFIX = b'{"type":"message"'
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
CONNECT_CONCURRENCY = 64  # below the servers' listen backlog (128)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked with a fresh random key (RFC 6455 5.3)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    repeated = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + key + body


def text(message: dict[str, Any]) -> bytes:
    """A masked text frame carrying ``message`` as compact JSON."""
    return masked_frame(OP_TEXT, json.dumps(message, separators=(",", ":")).encode())


class Counters:
    """Totals shared by all connections of one generator."""

    __slots__ = ("done", "expected", "last_at", "received")

    def __init__(self) -> None:
        self.received = 0
        self.expected = -1
        self.last_at = 0.0
        self.done = asyncio.Event()


class WSClient(asyncio.Protocol):
    """One client connection. Counts ``message`` frames once ``counting`` is on."""

    def __init__(self, counters: Counters, port: int) -> None:
        self.counters = counters
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.buf = bytearray()
        self.upgraded = False
        self.counting = False
        self.count = 0
        self.reads = 0
        self.closed = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: " + f"{HOST}:{self.port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self.key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        buf = self.buf
        buf += data
        if not self.upgraded and not self._upgrade():
            return
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for fut in (self.opened, self.welcomed, self.subscribed):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
                fut.exception()  # mark retrieved: nobody may be waiting on this one

    # ---------------------------------------------------------------- reading
    def _upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            self.opened.set_exception(ConnectionError(f"upgrade refused: {head.splitlines()[0]}"))
            self.opened.exception()
            assert self.transport is not None
            self.transport.close()
            return False
        self.upgraded = True
        self.opened.set_result(None)
        return True

    def _read_frames(self) -> None:
        buf = self.buf
        size = len(buf)
        pos = 0
        counted = 0
        counting = self.counting
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if counting and opcode == OP_TEXT and buf.startswith(MESSAGE_PREFIX, pos + head):
                counted += 1
            else:
                self._control(opcode, bytes(buf[pos + head : end]))
                counting = self.counting
            pos = end
        if pos:
            del buf[:pos]
        if counted:
            self.count += counted
            c = self.counters
            c.received += counted
            c.last_at = time.perf_counter()
            if c.received >= c.expected >= 0:
                c.done.set()

    def _control(self, opcode: int, payload: bytes) -> None:
        """Everything that is not a counted delivery: welcome, subscribed, ping, close."""
        if opcode == OP_PING:
            self.send(masked_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if self.transport is not None:
                self.transport.close()
        elif opcode == OP_TEXT:
            kind = json.loads(payload).get("type")
            if kind == "welcome" and not self.welcomed.done():
                self.welcomed.set_result(None)
            elif kind == "subscribed" and not self.subscribed.done():
                self.counting = True
                self.subscribed.set_result(None)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_clients(count: int, port: int, counters: Counters, timeout: float,
                       *, subscribe: bool) -> list[WSClient]:
    """Open ``count`` upgraded connections (optionally subscribed), bounded concurrency."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[WSClient] = []

    async def one(i: int) -> None:
        async with sem:
            _, client = await loop.create_connection(lambda: WSClient(counters, port), HOST, port)
            clients.append(client)
            await client.opened
            if subscribe:
                client.send(text({"type": "subscribe", "channel": CHANNEL, "id": i}))
                await client.subscribed
            else:
                await client.welcomed

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for task in tasks:
            task.cancel()
        for client in clients:
            client.close()
        raise
    return clients


def cpu_seconds(proc: psutil.Process) -> float:
    """On-CPU seconds of one process, all threads, children excluded, ns resolution.

    Linux ``/proc/PID/task/*/schedstat`` (first field: ns on CPU, user and
    kernel). psutil's user+system comes in 10 ms ticks, too coarse for a burst
    of ~0.1 s of CPU; it is the fallback and a cross-check (:func:`cpu_ticks`).
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return cpu_ticks(proc)
    return total / 1e9


def cpu_ticks(proc: psutil.Process) -> float:
    """User + system CPU seconds from psutil (clock-tick resolution)."""
    t = proc.cpu_times()
    return t.user + t.system


@dataclass
class FanoutResult:
    """What one fan-out burst measured."""

    subscribers: int
    messages: int
    size: int
    expected: int
    received: int
    lost: int
    timed_out: bool
    burst_seconds: float
    deliveries_per_s: float
    server_cpu_s: float
    server_us_per_delivery: float
    server_cpu_ticks_s: float
    loadgen_cpu_s: float
    loadgen_cpu_share: float
    min_per_client: int
    max_per_client: int
    frames_per_read: float
    interval: float = 0.0
    setup_seconds: float = 0.0


async def fanout(port: int, server_pid: int, subscribers: int, messages: int, size: int,
                 timeout: float, interval: float = 0.0) -> FanoutResult:
    """N subscribers on one channel; one publisher sends a burst; count deliveries.

    With ``interval`` > 0 the publisher paces its messages instead (one every
    ``interval`` seconds), so the server sees one publish per event-loop turn.
    """
    server = psutil.Process(server_pid)
    counters = Counters()
    t_setup = time.perf_counter()
    subs = await open_clients(subscribers, port, counters, timeout, subscribe=True)
    pubs = await open_clients(1, port, counters, timeout, subscribe=False)
    publisher = pubs[0]
    setup = time.perf_counter() - t_setup
    frames = [text({"type": "publish", "channel": CHANNEL,
                    "data": f"{i:08d}".ljust(size, "x")[:size]}) for i in range(messages)]
    counters.expected = subscribers * messages
    await asyncio.sleep(0.5)  # let the server settle after the subscribe storm
    gc.collect()
    gc.disable()
    try:
        reads0 = sum(c.reads for c in subs)
        ticks0, cpu0, own0 = cpu_ticks(server), cpu_seconds(server), time.process_time()
        t0 = time.perf_counter()
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                for frame in frames:
                    publisher.send(frame)
                    if interval > 0:
                        await asyncio.sleep(interval)
                await counters.done.wait()
        except TimeoutError:
            timed_out = True
        t_end = counters.last_at if counters.received else time.perf_counter()
        cpu1, own1, ticks1 = cpu_seconds(server), time.process_time(), cpu_ticks(server)
    finally:
        gc.enable()
        for client in [*subs, *pubs]:
            client.close()
    received = counters.received
    burst = max(t_end - t0, 1e-9)
    counts = [c.count for c in subs] or [0]
    reads = sum(c.reads for c in subs) - reads0
    return FanoutResult(
        subscribers=subscribers, messages=messages, size=size,
        expected=counters.expected, received=received,
        lost=counters.expected - received, timed_out=timed_out,
        burst_seconds=burst, deliveries_per_s=received / burst,
        server_cpu_s=cpu1 - cpu0,
        server_us_per_delivery=(cpu1 - cpu0) / received * 1e6 if received else float("nan"),
        server_cpu_ticks_s=ticks1 - ticks0,
        loadgen_cpu_s=own1 - own0, loadgen_cpu_share=(own1 - own0) / burst,
        min_per_client=min(counts), max_per_client=max(counts),
        frames_per_read=received / reads if reads else 0.0, interval=interval,
        setup_seconds=setup,
    )


@dataclass
class IdleResult:
    """RSS growth of the server over many idle connections."""

    idle_connections: int
    rss_before: int
    rss_after: int
    bytes_per_connection: float


async def idle(port: int, server_pid: int, connections: int, timeout: float,
               warmup: int = 20) -> IdleResult:
    """Open ``connections`` idle WebSockets (each got its welcome); report RSS growth."""
    server = psutil.Process(server_pid)
    counters = Counters()
    # a few connections first, so one-time costs (imports, caches) stay out of the figure
    warm = await open_clients(warmup, port, counters, timeout, subscribe=False)
    clients: list[WSClient] = []
    try:
        await asyncio.sleep(0.5)
        before = server.memory_info().rss
        clients = await open_clients(connections, port, counters, timeout, subscribe=False)
        await asyncio.sleep(1.0)
        after = server.memory_info().rss
    finally:
        for client in [*warm, *clients]:
            client.close()
    return IdleResult(connections, before, after, (after - before) / connections)


def raise_nofile_limit(wanted: int) -> None:
    """Raise the soft open-files limit to ``wanted`` if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.loadgen {fanout|idle} --port P --server-pid PID ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("fanout", "idle"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between publishes (0: one burst)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds for each phase (connect, burst)")
    args = parser.parse_args(argv)
    raise_nofile_limit(max(args.subscribers, args.idle) + 1024)
    result: FanoutResult | IdleResult
    if args.mode == "fanout":
        result = asyncio.run(fanout(args.port, args.server_pid, args.subscribers, args.messages,
                                    args.size, args.timeout, args.interval))
    else:
        result = asyncio.run(idle(args.port, args.server_pid, args.idle, args.timeout))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

"""The load generator: a minimal asyncio WebSocket client that only counts frames.

Runs in its own process (``python -m benchmarks.loadgen fanout|idle ...``) and
prints one JSON object on stdout. It reads the server's CPU and RSS from the OS
(by pid) at the edges of the measured phase, and its own CPU with
``time.process_time()``, so a reader can check it was not the bottleneck.

The client is hand-written on ``asyncio.Protocol`` (no WebSocket library):
HTTP/1.1 upgrade, masked client frames, and a frame reader that walks frame
headers in the receive buffer and counts text frames starting with the
dialect's message prefix (:mod:`benchmarks.wire`) without decoding them.
Latency-sampling clients (every ``--sample-every``-th subscriber) also read
the publisher's ``time.monotonic_ns()`` stamp from every message they get.
Pings are answered with pongs. Only 127.0.0.1 is ever contacted.
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

from benchmarks.wire import (
    CHANNEL,
    DIALECTS,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    STAMP,
    STAMP_DIGITS,
    Dialect,
    masked_frame,
    stamped_data,
)

HOST = "127.0.0.1"
NATIVE = DIALECTS["native"]
MESSAGE_PREFIX = NATIVE.message_prefix
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNECT_CONCURRENCY = 64  # below the servers' listen backlog (128)


class Counters:
    """Totals shared by all connections of one generator."""

    __slots__ = ("done", "expected", "last_at", "last_ns", "received")

    def __init__(self) -> None:
        self.received = 0
        self.expected = -1
        self.last_at = 0.0  # time.perf_counter() of the latest delivery
        self.last_ns = 0  # the same moment in time.monotonic_ns()
        self.done = asyncio.Event()


class WSClient(asyncio.Protocol):
    """One client connection. Counts message frames once ``counting`` is on."""

    def __init__(self, counters: Counters, port: int, dialect: Dialect = NATIVE,
                 sample: bool = False) -> None:
        self.counters = counters
        self.port = port
        self.dialect = dialect
        self.prefix = dialect.message_prefix
        self.sample = sample
        self.latencies: list[int] = []
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.buf = bytearray()
        self.upgraded = False
        self.counting = False
        self.count = 0
        self.reads = 0
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.welcomed: asyncio.Future[None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET " + self.dialect.path.encode() + b" HTTP/1.1\r\nHost: "
            + f"{HOST}:{self.port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self.key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self.buf += data
        if not self.upgraded and not self._upgrade():
            return
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
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
        prefix = self.prefix
        sample = self.sample
        now = time.monotonic_ns() if sample else 0
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
            if counting and opcode == OP_TEXT and buf.startswith(prefix, pos + head):
                counted += 1
                if sample:
                    at = buf.find(STAMP, pos + head, end)
                    if at >= 0:
                        start = at + len(STAMP)
                        self.latencies.append(now - int(buf[start : start + STAMP_DIGITS]))
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
            c.last_ns = time.monotonic_ns()
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
            event, reply = self.dialect.classify(payload)
            if reply is not None:
                self.send(reply)
            if event == "welcome" and not self.welcomed.done():
                self.welcomed.set_result(None)
            elif event == "subscribed" and not self.subscribed.done():
                self.counting = True
                self.subscribed.set_result(None)
            elif event == "closed" and self.transport is not None:
                self.transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_clients(count: int, port: int, counters: Counters, timeout: float, *,
                       subscribe: bool, dialect: Dialect = NATIVE, sample_every: int = 0
                       ) -> list[WSClient]:
    """Open ``count`` connections (welcomed, optionally subscribed), bounded concurrency."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[WSClient] = []

    async def one(i: int) -> None:
        sample = sample_every > 0 and i % sample_every == 0
        async with sem:
            _, client = await loop.create_connection(
                lambda: WSClient(counters, port, dialect, sample), HOST, port)
            clients.append(client)
            await client.welcomed
            if subscribe:
                client.send(dialect.subscribe(i))
                await client.subscribed

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


def text(message: dict[str, Any]) -> bytes:
    """A masked text frame carrying ``message`` as compact JSON (native dialect)."""
    return masked_frame(OP_TEXT, json.dumps(message, separators=(",", ":")).encode())


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


def percentile(sorted_values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return float(sorted_values[rank])


@dataclass
class FanoutResult:
    """What one fan-out (burst or paced) measured."""

    subscribers: int
    messages: int
    size: int
    expected: int
    received: int
    lost: int
    timed_out: bool
    seconds: float
    deliveries_per_s: float
    offered_per_s: float
    server_cpu_s: float
    server_us_per_delivery: float
    server_cpu_ticks_s: float
    loadgen_cpu_s: float
    loadgen_cpu_share: float
    min_per_client: int
    max_per_client: int
    frames_per_read: float
    interval: float
    setup_seconds: float
    window_start_ns: int
    window_end_ns: int
    rss_before_connect: int
    rss_subscribed: int
    latency_samples: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


async def fanout(port: int, server_pid: int, dialect: Dialect, subscribers: int, messages: int,
                 size: int, timeout: float, interval: float = 0.0,
                 sample_every: int = 10, settle: float = 0.5,
                 deliver_timeout: float | None = None) -> FanoutResult:
    """N subscribers on one channel; one publisher sends a burst (or paced); count deliveries.

    With ``interval`` > 0 publishes are paced on an absolute schedule (message i
    at t0 + i * interval), so the rate does not drift when one send is late.
    """
    server = psutil.Process(server_pid)
    rss0 = server.memory_info().rss
    counters = Counters()
    t_setup = time.perf_counter()
    subs = await open_clients(subscribers, port, counters, timeout, subscribe=True,
                              dialect=dialect, sample_every=sample_every)
    pubs = await open_clients(1, port, counters, timeout, subscribe=False, dialect=dialect)
    publisher = pubs[0]
    setup = time.perf_counter() - t_setup
    counters.expected = subscribers * messages
    await asyncio.sleep(settle)  # let the server settle after the subscribe storm
    rss1 = server.memory_info().rss
    gc.collect()
    gc.disable()
    try:
        reads0 = sum(c.reads for c in subs)
        ticks0, cpu0, own0 = cpu_ticks(server), cpu_seconds(server), time.process_time()
        t0 = time.monotonic_ns()
        t_last_publish = t0
        timed_out = False
        try:
            async with asyncio.timeout(deliver_timeout or timeout):
                for i in range(messages):
                    if interval > 0:
                        delay = t0 / 1e9 + i * interval - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    t_last_publish = time.monotonic_ns()
                    publisher.send(dialect.publish(stamped_data(t_last_publish, size)))
                await counters.done.wait()
        except TimeoutError:
            timed_out = True
        t_end = counters.last_ns if counters.received else time.monotonic_ns()
        cpu1, own1, ticks1 = cpu_seconds(server), time.process_time(), cpu_ticks(server)
    finally:
        gc.enable()
        for client in [*subs, *pubs]:
            client.close()
    received = counters.received
    seconds = max(t_end - t0, 1) / 1e9
    publish_span = (t_last_publish - t0) / 1e9
    offered = (subscribers * (messages - 1) / publish_span if interval > 0 and publish_span > 0
               else float("nan"))
    counts = [c.count for c in subs] or [0]
    reads = sum(c.reads for c in subs) - reads0
    lat = sorted(x for c in subs for x in c.latencies)
    return FanoutResult(
        subscribers=subscribers, messages=messages, size=size,
        expected=counters.expected, received=received,
        lost=counters.expected - received, timed_out=timed_out,
        seconds=seconds, deliveries_per_s=received / seconds, offered_per_s=offered,
        server_cpu_s=cpu1 - cpu0,
        server_us_per_delivery=(cpu1 - cpu0) / received * 1e6 if received else float("nan"),
        server_cpu_ticks_s=ticks1 - ticks0,
        loadgen_cpu_s=own1 - own0, loadgen_cpu_share=(own1 - own0) / seconds,
        min_per_client=min(counts), max_per_client=max(counts),
        frames_per_read=received / reads if reads else 0.0, interval=interval,
        setup_seconds=setup, window_start_ns=t0, window_end_ns=t_end,
        rss_before_connect=rss0, rss_subscribed=rss1,
        latency_samples=len(lat), latency_p50_ms=percentile(lat, 0.5) / 1e6,
        latency_p99_ms=percentile(lat, 0.99) / 1e6,
        latency_max_ms=(lat[-1] / 1e6 if lat else float("nan")),
    )


@dataclass
class IdleResult:
    """RSS growth of the server over many idle connections."""

    idle_connections: int
    rss_before: int
    rss_after: int
    bytes_per_connection: float


async def idle(port: int, server_pid: int, dialect: Dialect, connections: int, timeout: float,
               warmup: int = 20, settle: float = 0.5) -> IdleResult:
    """Open ``connections`` idle WebSockets (each got its welcome); report RSS growth."""
    server = psutil.Process(server_pid)
    counters = Counters()
    # a few connections first, so one-time costs (imports, caches) stay out of the figure
    warm = await open_clients(warmup, port, counters, timeout, subscribe=False, dialect=dialect)
    clients: list[WSClient] = []
    try:
        await asyncio.sleep(settle)
        before = server.memory_info().rss
        clients = await open_clients(connections, port, counters, timeout, subscribe=False,
                                     dialect=dialect)
        await asyncio.sleep(2 * settle)
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
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default="native")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between publishes (0: one burst)")
    parser.add_argument("--sample-every", type=int, default=10,
                        help="every k-th subscriber reads the latency stamp of all its "
                             "messages (0: none)")
    parser.add_argument("--deliver-timeout", type=float, default=None,
                        help="seconds for publishing and delivering (default: --timeout)")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to wait after connecting, before measuring")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds for each phase (connect, burst)")
    args = parser.parse_args(argv)
    raise_nofile_limit(max(args.subscribers, args.idle) + 1024)
    dialect = DIALECTS[args.dialect]
    result: Any
    if args.mode == "fanout":
        result = asyncio.run(fanout(args.port, args.server_pid, dialect, args.subscribers,
                                    args.messages, args.size, args.timeout, args.interval,
                                    args.sample_every, args.settle, args.deliver_timeout))
    else:
        result = asyncio.run(idle(args.port, args.server_pid, dialect, args.idle, args.timeout,
                                  settle=args.settle))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

# re-exported for the other benchmark scripts that drive this client
__all__ = ["CHANNEL", "MESSAGE_PREFIX", "OP_PING", "Counters", "WSClient", "open_clients",
           "raise_nofile_limit", "text"]

"""A load-generator process: N subscribers and one publisher, driven over stdin/stdout.

Subscribers are minimal WebSocket clients on ``asyncio.Protocol`` that walk frame
headers and count ``message`` frames, reading only the ``ts`` stamp (``--client
raw``, the default, so the load process keeps up with the server), or
:class:`realtime_lab.client.Client` objects that decode every message
(``--client lab``). Run by :mod:`realtime_lab.instrument.experiment` and
benchmarks/recorder_overhead.py as
``python -m realtime_lab.instrument.loadgen URL --subscribers N`` so that the
clients' CPU does not count as the server's. Commands (one JSON object a line on
stdin): ``{"cmd": "burst", "count": C, "size": B, "pace": S}`` publishes C
messages of B bytes (S seconds apart; 0, the default, sends them at once) and
answers, once every subscriber has them all (or after ``timeout``),
``{"event": "done", "received": ..., "expected": ..., "latency_ms": [...], ...}``;
``{"cmd": "quit"}`` closes everything. Latency is the client's receive time minus
the server's ``ts`` stamp (the recorder's ``timestamps`` option).

Receipts: every ``RECEIPT_INTERVAL`` seconds the load sends the server a
``receipts`` message (docs/protocol.md) with a random sample of at most
``max_samples`` of the latencies measured since the last one, on the first
subscriber's connection, so a recording server fills its ``latency`` table with
no call in the experiment (``--no-receipts`` turns it off). One small message
four times a second, whatever the fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import struct
import sys
import time
from typing import Any

from realtime_lab.client import Client, connect
from realtime_lab.errors import ConnectionClosed

LATENCY_SAMPLES = 2000
RECEIPT_INTERVAL = 0.25
_MSG = b'{"type":"message"'
_TS = b'"ts":'


def _masked(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payloads here are short)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x80 | opcode,
                                                                        0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSubscriber(asyncio.Protocol):
    """A subscriber that counts message frames and reads their ``ts`` without decoding JSON."""

    def __init__(self, load: Load, path: str, host: str, user: str,
                 subscribe: bool = True) -> None:
        self.load = load
        self.subscribe = subscribe
        self.request = (f"GET {path}?user={user} HTTP/1.1\r\nHost: {host}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.buf = bytearray()
        self.upgraded = False
        self.receipts_offered = 0  # max_samples from the welcome's "receipts", 0: none
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before subscribing"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(bytes(buf[:end]).decode(errors="replace"))
            del buf[:end + 4]
            self.upgraded = True
            assert self.transport is not None
            if not self.subscribe:  # the publisher
                self.subscribed.set_result(None)
            else:
                sub = json.dumps({"type": "subscribe", "channel": self.load.channel, "id": 1})
                self.transport.write(_masked(0x1, sub.encode()))
        pos, size, load = 0, len(buf), self.load
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if size - pos < head + n:
                break
            start = pos + head
            opcode = b0 & 0x0F
            if opcode == 0x1:
                if buf.startswith(_MSG, start):
                    at = buf.find(_TS, start, start + n) if load.measure_latency else -1
                    if at >= 0:
                        stop = at + 5
                        while buf[stop] not in b",}":
                            stop += 1
                        load.latencies.append((time.time() - float(buf[at + 5:stop])) * 1e3)
                    load.count()
                elif not self.subscribed.done():
                    frame = bytes(buf[start:start + n])
                    if frame.startswith(b'{"type":"welcome"'):
                        self.receipts_offered = _offered(frame)
                    elif b'"subscribed"' in frame:
                        self.subscribed.set_result(None)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(_masked(0xA, bytes(buf[start:start + n])))
            pos = start + n
        if pos:
            del buf[:pos]


def _offered(welcome: bytes) -> int:
    """``receipts.max_samples`` of a welcome frame (0 when absent or malformed)."""
    try:
        offer = json.loads(welcome).get("receipts")
    except ValueError:
        return 0
    limit = offer.get("max_samples") if isinstance(offer, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else 0


class Load:
    """Subscribers counting what they receive, and the latencies of stamped messages."""

    def __init__(self, url: str, channel: str, subscribers: int, raw: bool = True,
                 receipts: bool = True) -> None:
        self.url = url
        self.receipts = receipts
        self.reported = 0  # latencies[:reported] were sampled into receipts already
        self.rng = random.Random(1)
        self.reporter: asyncio.Task[None] | None = None
        self.raw = raw
        self.raw_subs: list[asyncio.Transport] = []
        self.measure_latency = True
        self.channel = channel
        self.n = subscribers
        self.clients: list[Client] = []
        self.readers: list[asyncio.Task[None]] = []
        self.received = 0
        self.latencies: list[float] = []
        self.target = 0
        self.reached = asyncio.Event()

    async def start(self, concurrency: int = 64) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Client:
            async with gate:
                client = await connect(self.url, user=f"sub{i}", timeout=30, receipts=False)
                await client.subscribe(self.channel)
                return client

        async def raw(user: str, subscribe: bool = True) -> asyncio.Transport:
            async with gate:
                rest = self.url.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.rpartition(":")
                loop = asyncio.get_running_loop()
                transport, proto = await loop.create_connection(
                    lambda: RawSubscriber(self, "/" + path, hostport, user, subscribe),
                    host, int(port))
                await asyncio.wait_for(proto.subscribed, 30)
                return transport

        if self.raw:
            self.raw_subs = list(await asyncio.gather(*(raw(f"sub{i}") for i in range(self.n))))
        else:
            self.clients = list(await asyncio.gather(*(one(i) for i in range(self.n))))
            self.readers = [asyncio.create_task(self._read(c)) for c in self.clients]
        # the publisher only writes frames: a raw connection (answers pings, reads nothing)
        self.publisher = await raw("publisher", subscribe=False)
        self.raw_subs.append(self.publisher)
        if self.receipts and self.n:
            self.reporter = asyncio.create_task(self._report())

    def _offered(self) -> int:
        """max_samples of the server's receipts offer (0 when it made none)."""
        if self.clients:
            offer = self.clients[0].welcome.get("receipts")
            return int(offer.get("max_samples", 0)) if isinstance(offer, dict) else 0
        first = self.raw_subs[0].get_protocol() if self.raw_subs else None
        return first.receipts_offered if isinstance(first, RawSubscriber) else 0

    async def _report(self) -> None:
        """Send a sample of the new latencies as ``receipts``, every RECEIPT_INTERVAL."""
        while True:
            await asyncio.sleep(RECEIPT_INTERVAL)
            await self.report()

    async def report(self) -> None:
        """Send the server a sample of the latencies measured since the last report."""
        limit = self._offered() if self.receipts and self.n else 0
        new = self.latencies[self.reported:]
        self.reported = len(self.latencies)
        if not limit or not new:
            return
        sample = new if len(new) <= limit else self.rng.sample(new, limit)
        msg = {"type": "receipts", "channel": self.channel,
               "latency_ms": [round(v, 3) for v in sample]}
        if self.clients:
            with contextlib.suppress(ConnectionClosed):
                await self.clients[0].send(msg)
        elif self.raw_subs:
            self.raw_subs[0].write(_masked(0x1, json.dumps(msg).encode()))

    async def _read(self, client: Client) -> None:
        lat = self.latencies
        try:
            while True:
                msg = await client.recv_message(self.channel)
                now = time.time()
                ts = msg.get("ts")
                if ts is not None:
                    lat.append((now - ts) * 1e3)
                self.count()
        except (ConnectionClosed, asyncio.CancelledError):
            return

    def count(self) -> None:
        self.received += 1
        if self.received >= self.target:
            self.reached.set()

    async def burst(self, count: int, size: int, timeout: float, pace: float = 0.0,
                    latency: bool = True) -> dict[str, Any]:
        """Publish ``count`` messages (``pace`` seconds apart, 0 = at once) and wait.

        ``latency=False``: raw subscribers do not read the ``ts`` stamps.
        """
        await self.report()  # what the previous burst left
        self.measure_latency = latency
        self.received = 0
        self.latencies.clear()
        self.reported = 0
        self.target = count * self.n
        self.reached.clear()
        payload = "x" * size
        started = time.perf_counter()
        write = self.publisher.write
        for i in range(count):
            msg = {"type": "publish", "channel": self.channel, "data": {"i": i, "p": payload}}
            write(_masked(0x1, json.dumps(msg).encode()))
            if pace > 0:
                await asyncio.sleep(pace)
            elif i % 50 == 49:
                await asyncio.sleep(0)  # let the transport drain
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.reached.wait(), timeout)
        elapsed = time.perf_counter() - started
        lat = list(self.latencies)
        sample = lat if len(lat) <= LATENCY_SAMPLES else random.Random(0).sample(
            lat, LATENCY_SAMPLES)
        return {"event": "done", "received": self.received, "expected": self.target,
                "elapsed_s": elapsed, "latency_ms": sample, "latency_count": len(lat)}

    async def close(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
        await self.report()
        for task in self.readers:
            task.cancel()
        for transport in self.raw_subs:
            transport.close()
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    load = Load(args.url, args.channel, args.subscribers, raw=args.client == "raw",
                receipts=args.receipts)
    await load.start()
    _emit({"event": "ready", "subscribers": args.subscribers})
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            if cmd.get("cmd") == "burst":
                _emit(await load.burst(int(cmd.get("count", 200)), int(cmd.get("size", 100)),
                                       float(cmd.get("timeout", 60)),
                                       float(cmd.get("pace", 0.0)),
                                       bool(cmd.get("latency", True))))
            elif cmd.get("cmd") == "quit":
                break
    finally:
        await load.close()
        _emit({"event": "bye"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--channel", default="fanout")
    parser.add_argument("--client", choices=("raw", "lab"), default="raw")
    parser.add_argument("--no-receipts", dest="receipts", action="store_false",
                        help="do not report latencies to the server (receipts)")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

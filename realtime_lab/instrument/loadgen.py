"""A load-generator process: N subscribers and one publisher, driven over stdin/stdout.

Run by :mod:`realtime_lab.instrument.experiment` and benchmarks/recorder_overhead.py
as ``python -m realtime_lab.instrument.loadgen URL --subscribers N`` so that the
clients' CPU does not count as the server's. Commands (one JSON object a line on
stdin): ``{"cmd": "burst", "count": C, "size": B}`` publishes C messages of B
bytes and answers, once every subscriber has them all (or after ``timeout``),
``{"event": "done", "received": ..., "expected": ..., "latency_ms": [...], ...}``;
``{"cmd": "quit"}`` closes everything. Latency is the client's receive time minus
the server's ``ts`` stamp (the recorder's ``timestamps`` option).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from realtime_lab.client import Client, connect
from realtime_lab.errors import ConnectionClosed

LATENCY_SAMPLES = 2000


class Load:
    """Subscribers counting what they receive, and the latencies of stamped messages."""

    def __init__(self, url: str, channel: str, subscribers: int) -> None:
        self.url = url
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
                client = await connect(self.url, user=f"sub{i}", timeout=30)
                await client.subscribe(self.channel)
                return client

        self.clients = list(await asyncio.gather(*(one(i) for i in range(self.n))))
        self.readers = [asyncio.create_task(self._read(c)) for c in self.clients]
        self.publisher = await connect(self.url, user="publisher", timeout=30)

    async def _read(self, client: Client) -> None:
        lat = self.latencies
        try:
            while True:
                msg = await client.recv_message(self.channel)
                now = time.time()
                ts = msg.get("ts")
                if ts is not None:
                    lat.append((now - ts) * 1e3)
                self.received += 1
                if self.received >= self.target:
                    self.reached.set()
        except (ConnectionClosed, asyncio.CancelledError):
            return

    async def burst(self, count: int, size: int, timeout: float) -> dict[str, Any]:
        self.received = 0
        self.latencies.clear()
        self.target = count * self.n
        self.reached.clear()
        payload = "x" * size
        started = time.perf_counter()
        for i in range(count):
            await self.publisher.publish(self.channel, {"i": i, "p": payload})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.reached.wait(), timeout)
        elapsed = time.perf_counter() - started
        lat = list(self.latencies)
        sample = lat if len(lat) <= LATENCY_SAMPLES else random.Random(0).sample(
            lat, LATENCY_SAMPLES)
        return {"event": "done", "received": self.received, "expected": self.target,
                "elapsed_s": elapsed, "latency_ms": sample, "latency_count": len(lat)}

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(c.close() for c in [*self.clients, self.publisher]),
                             return_exceptions=True)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    load = Load(args.url, args.channel, args.subscribers)
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
                                       float(cmd.get("timeout", 60))))
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
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

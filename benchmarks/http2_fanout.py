"""Server CPU per delivery: fan-out to WebSockets on HTTP/2 streams vs HTTP/1.1 sockets.

    .venv/bin/python -m benchmarks.http2_fanout --sizes 100,1000 --rounds 5

Each run starts a fresh server in a child process (``http2=True``, h2c), connects N
subscribers to one channel, either as N HTTP/1.1 WebSockets (``h1``) or as N
extended-CONNECT streams spread over connections of 100 streams (``h2``), then the
child publishes P messages, one per ``--interval`` (a paced broadcast: each publish
its own turn), and reports its own process CPU time from the first publish until
every subscriber has read every message. The clients (this process: raw sockets for
h1, the h2 library for h2) only count bytes; they are not measured. Runs alternate
h1, h2, h1, h2... and the table gives medians and the h2/h1 ratio.

``--ref main`` adds a third run to each round: HTTP/2 with realtime_lab as of that
git revision (exported, so editing the working tree meanwhile changes nothing of it).
``--profile PREFIX`` instead runs each mode once with cProfile in the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import asyncio, cProfile, json, os, sys, time
import realtime_lab

PROFILE = os.environ.get("HTTP2_FANOUT_PROFILE")
profiler = cProfile.Profile() if PROFILE else None

async def main():
    server = await realtime_lab.serve(port=0, http2=True, max_connections_per_ip=100000)
    print(json.dumps({"port": server.port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "count":
            info = server.channel_info("bench") or {}
            print(json.dumps({"subscribers": info.get("subscribers", 0)}), flush=True)
        elif cmd["op"] == "publish":
            t0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            payload = "x" * cmd["size"]
            for i in range(cmd["count"]):
                server.publish("bench", {"i": i, "p": payload})
                await asyncio.sleep(cmd["interval"])
            print(json.dumps({"published": True, "t0": t0}), flush=True)
        elif cmd["op"] == "cpu":
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(PROFILE)
            print(json.dumps({"cpu": time.process_time()}), flush=True)
        elif cmd["op"] == "stop":
            break
    await server.stop()

asyncio.run(main())
"""

SUBSCRIBE = json.dumps({"type": "subscribe", "channel": "bench"}).encode()


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


class H1Client(asyncio.Protocol):
    """One HTTP/1.1 WebSocket; counts the bytes after the 101."""

    def __init__(self) -> None:
        self.received = 0
        self.upgraded = asyncio.get_running_loop().create_future()
        self.head = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.upgraded.set_result(None)
                self.transport.write(masked_text(SUBSCRIBE))
            return
        self.received += len(data)


class H2Conn:
    """One h2c connection carrying up to 100 WebSocket streams; counts DATA bytes."""

    def __init__(self) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.received = 0
        self.accepted = 0

    async def open(self, port: int, streams: int) -> None:
        from h2.events import DataReceived, ResponseReceived

        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(16 << 20)
        self.events = (DataReceived, ResponseReceived)
        for _ in range(streams):
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                       (":scheme", "http"), (":path", "/ws"),
                                       (":authority", f"127.0.0.1:{port}"),
                                       ("sec-websocket-version", "13")])
            self.h2.send_data(sid, masked_text(SUBSCRIBE))
        self.writer.write(self.h2.data_to_send())
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        data_event, response_event = self.events
        while data := await self.reader.read(1 << 20):
            for event in self.h2.receive_data(data):
                if isinstance(event, data_event):
                    self.received += len(event.data)
                    self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)
                elif isinstance(event, response_event):
                    self.accepted += 1
            out = self.h2.data_to_send()
            if out:
                self.writer.write(out)


async def ask(child: subprocess.Popen[str], op: dict[str, Any]) -> dict[str, Any]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps(op) + "\n")
    child.stdin.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    return dict(json.loads(line))


async def one_run(mode: str, size: int, count: int, interval: float,
                  payload: int, profile: str | None = None, src: Path | None = None) -> float:
    """One server, one mode; ``src``: import realtime_lab from there (``--ref``)."""
    env = dict(os.environ)
    if profile:
        env["HTTP2_FANOUT_PROFILE"] = profile
    if src is not None:  # first on sys.path, and not the working tree as the current dir
        env["PYTHONPATH"] = str(src)
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env,
                             cwd=src if src is not None else None)
    try:
        assert child.stdout is not None
        port = json.loads(child.stdout.readline())["port"]
        loop = asyncio.get_running_loop()
        clients: list[Any] = []
        if mode == "h1":
            for _ in range(size):
                _t, proto = await loop.create_connection(H1Client, "127.0.0.1", port)
                clients.append(proto)
        else:
            left = size
            while left:
                conn = H2Conn()
                await conn.open(port, min(100, left))
                clients.append(conn)
                left -= min(100, left)
        deadline = time.monotonic() + 60
        while (await ask(child, {"op": "count"}))["subscribers"] < size:
            assert time.monotonic() < deadline, "subscribers did not all arrive"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        base = sum(c.received for c in clients)
        started = await ask(child, {"op": "publish", "count": count, "interval": interval,
                                    "size": payload})
        # quiescence: every subscriber read every message (bytes stop growing)
        last, still = -1, 0
        while still < 3:
            await asyncio.sleep(0.1)
            now = sum(c.received for c in clients)
            still = still + 1 if now == last else 0
            last = now
        cpu = (await ask(child, {"op": "cpu"}))["cpu"] - started["t0"]
        got = last - base
        assert got >= size * count * payload, (got, size * count * payload)
        return cpu / (size * count) * 1e6
    finally:
        with contextlib.suppress(Exception):
            await ask(child, {"op": "stop"})
        child.wait(timeout=10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=50, help="messages published per run")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--payload", type=int, default=100, help="bytes of each message's data")
    parser.add_argument("--ref", default=None, help="also HTTP/2 as of git revision REF "
                        "(e.g. main), in the same rounds")
    parser.add_argument("--profile", metavar="PREFIX", default=None,
                        help="instead: one run per size and mode with cProfile in the server, "
                        "stats in PREFIX-<mode>-<size>.prof, the top functions printed")
    args = parser.parse_args()
    if args.profile:
        await profile(args)
        return
    from benchmarks.run import source_tree

    with source_tree(args.ref) as ref_src:
        rows = [await measure(size, args, ref_src) for size in
                (int(s) for s in args.sizes.split(","))]
    ref = f" | HTTP/2 at {args.ref}, us / delivery | ratio at {args.ref}" if args.ref else ""
    print("\n| subscribers | HTTP/1.1 sockets, us / delivery | HTTP/2 streams, us / delivery "
          f"| ratio h2/h1 (median of pairs){ref} |\n|---:|---:|---:|---:|"
          + ("---:|---:|" if args.ref else ""))
    for size, cells in rows:
        print(f"| {size} | " + " | ".join(cells) + " |")


async def measure(size: int, args: argparse.Namespace,
                  ref_src: Path | None) -> tuple[int, list[str]]:
    """``args.rounds`` rounds of h1, h2 (and h2 at ``--ref``) runs, interleaved; the cells
    of the table's row: medians (min-max) and the median of each round's h2/h1 ratio."""
    modes = ["h1", "h2"] + (["ref"] if ref_src is not None else [])
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            src = ref_src if mode == "ref" else None
            results[mode].append(await one_run("h2" if mode == "ref" else mode, size,
                                               args.count, args.interval, args.payload,
                                               src=src))
            print(f"{size} {mode} {results[mode][-1]:.2f} us/delivery", flush=True)
    cells = []
    for mode in modes:
        values = results[mode]
        cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        if mode != "h1":
            ratios = [b / a for a, b in zip(results["h1"], values, strict=True)]
            cells.append(f"{statistics.median(ratios):.2f}")
    return size, cells


async def profile(args: argparse.Namespace) -> None:
    """One profiled run per size and mode (cProfile slows the server: read its shares,
    not its times)."""
    import pstats

    for size in (int(s) for s in args.sizes.split(",")):
        for mode in ("h1", "h2"):
            path = f"{args.profile}-{mode}-{size}.prof"
            await one_run(mode, size, args.count, args.interval, args.payload, profile=path)
            print(f"\n== {mode}, {size} subscribers ({path})")
            pstats.Stats(path).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())

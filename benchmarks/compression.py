"""permessage-deflate for broadcasts: off, per connection, and shared (compressed once).

One server process per mode; this process is the load generator (its CPU is not
counted). N subscribers (1000 by default) connect with the ``websockets`` client,
then the server publishes a burst of M 1 KB JSON messages that compress well,
one per event-loop turn, to all of them. Reported per mode:

* server CPU per delivery: server process CPU time (user+sys, psutil) over the
  burst, from the first publish until every subscriber has every message,
  divided by M x N;
* memory per connection: server RSS growth from before the clients connect to
  after they are connected and have each received a first (compressed) message,
  divided by N;
* bytes per delivery on the wire (payload after compression, as the server wrote it).

Modes:

``off``             realtime_lab, clients do not offer compression (one frame per broadcast).
``tornado-pmd``     plain Tornado, ``write_message`` per subscriber with Tornado's
                    permessage-deflate (context takeover: one compressor per connection).
``websockets-pmd``  the ``websockets`` library server with its default compression
                    and ``broadcast()`` (one compression per recipient, context takeover).
``per-delivery``    realtime_lab with ``CompressionPolicy(shared=False)``: each delivery
                    compressed separately (no context takeover).
``shared``          realtime_lab default: compressed once per broadcast, same bytes to all.

Run: ``.venv/bin/python -m benchmarks.compression [--subscribers 1000] [--messages 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("off", "tornado-pmd", "websockets-pmd", "per-delivery", "shared")
CHANNEL = "bench"


def payload(seq: int) -> dict[str, Any]:
    """About 1 KB of JSON once framed; repetitive, like real telemetry (ratio ~ 5-8x)."""
    rows = [{"sensor": f"s{i}", "kind": "temperature", "unit": "celsius", "status": "ok",
             "value": 21.5 + (seq + i) % 7} for i in range(11)]
    return {"seq": seq, "rows": rows}


# ---------------------------------------------------------------- servers (child process)


async def _control(publish: Any, *, port_out: list[int]) -> asyncio.Server:
    """A line protocol on a second port: ``burst M`` publishes M messages, answers ``done``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            cmd, _, arg = line.decode().strip().partition(" ")
            if cmd == "burst":
                for seq in range(int(arg)):
                    publish(seq)
                    await asyncio.sleep(0)
                writer.write(b"done\n")
            elif cmd == "one":
                publish(-1)
                writer.write(b"done\n")
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_out.append(server.sockets[0].getsockname()[1])
    return server


async def _serve(mode: str) -> None:
    control_port: list[int] = []
    if mode in ("off", "per-delivery", "shared"):
        import realtime_lab
        from realtime_lab.protocol.deflate import CompressionPolicy

        policy = CompressionPolicy(shared=mode != "per-delivery", enabled=mode != "off")
        srv = await realtime_lab.serve(port=0, compression=policy, max_connections=100_000,
                                       max_connections_per_ip=100_000, heartbeat_interval=300,
                                       heartbeat_timeout=300, max_outbound_bytes=64 << 20)
        ws_port = srv.port

        def publish(seq: int) -> None:
            srv.publish(CHANNEL, payload(seq))

        def wire_bytes() -> int:
            return sum(s.stats.bytes_out for s in srv.hub.sessions.values())
    elif mode == "tornado-pmd":
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets
        from tornado.web import Application
        from tornado.websocket import WebSocketClosedError, WebSocketHandler

        subs: set[WebSocketHandler] = set()
        encode = json.JSONEncoder(separators=(",", ":")).encode

        class Handler(WebSocketHandler):
            def get_compression_options(self) -> dict[str, Any]:
                return {}

            def open(self, *args: Any) -> None:
                subs.add(self)

            def on_close(self) -> None:
                subs.discard(self)

        sockets = bind_sockets(0, "127.0.0.1")
        ws_port = sockets[0].getsockname()[1]
        http = HTTPServer(Application([(r"/ws", Handler)]))
        http.add_sockets(sockets)

        def publish(seq: int) -> None:
            text = encode({"type": "message", "channel": CHANNEL, "data": payload(seq)})
            for h in list(subs):
                with contextlib.suppress(WebSocketClosedError):
                    h.write_message(text)

        def wire_bytes() -> int:
            return sum(h.ws_connection._wire_bytes_out for h in subs  # type: ignore[union-attr]
                       if h.ws_connection is not None)
    else:  # websockets-pmd
        import websockets
        from websockets.asyncio.server import broadcast, serve

        conns: set[Any] = set()
        encode = json.JSONEncoder(separators=(",", ":")).encode
        counted = [0]

        async def handler(ws: Any) -> None:
            conns.add(ws)
            try:
                await ws.wait_closed()
            finally:
                conns.discard(ws)

        wsrv = await serve(handler, "127.0.0.1", 0, ping_interval=None, max_queue=None,
                           write_limit=64 << 20)
        ws_port = wsrv.sockets[0].getsockname()[1]
        del websockets

        def publish(seq: int) -> None:
            text = encode({"type": "message", "channel": CHANNEL, "data": payload(seq)})
            broadcast(conns, text)

        def wire_bytes() -> int:
            return counted[0]  # not exposed by websockets; estimated client side

    ctl = await _control(publish, port_out=control_port)

    async def report_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{wire_bytes()}\n".encode())
        await writer.drain()
        writer.close()

    bytes_srv = await asyncio.start_server(report_bytes, "127.0.0.1", 0)
    print(json.dumps({"ws": ws_port, "control": control_port[0],
                      "bytes": bytes_srv.sockets[0].getsockname()[1], "pid": os.getpid()}),
          flush=True)
    del ctl
    await asyncio.Event().wait()


# ---------------------------------------------------------------- load generator


@dataclass
class Row:
    mode: str
    subscribers: int
    messages: int
    delivered: int
    cpu_us_per_delivery: float
    mem_kb_per_connection: float
    wire_bytes_per_delivery: float
    deliveries_per_s: float


async def _client(url: str, mode: str, counts: list[int], idx: int, ready: asyncio.Event,
                   started: list[int]) -> Any:
    import websockets

    compression = None if mode == "off" else "deflate"
    ws = await websockets.connect(url, compression=compression, max_queue=None,
                                  ping_interval=None, max_size=None)
    if mode in ("off", "per-delivery", "shared"):
        await ws.send(json.dumps({"type": "subscribe", "channel": CHANNEL}))
        while json.loads(await ws.recv()).get("type") != "subscribed":
            pass
    started[0] += 1
    if started[0] == len(counts):
        ready.set()

    async def reader() -> None:
        async for raw in ws:
            if raw.startswith('{"type":"message'):
                counts[idx] += 1

    return ws, asyncio.ensure_future(reader())


async def run_mode(mode: str, subscribers: int, messages: int) -> Row:
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.compression", "--serve", mode],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        server = psutil.Process(info["pid"])
        url = f"ws://127.0.0.1:{info['ws']}/ws"
        await asyncio.sleep(0.3)
        rss0 = server.memory_info().rss
        counts = [0] * subscribers
        ready = asyncio.Event()
        started = [0]
        clients = []
        for batch in range(0, subscribers, 100):
            clients += await asyncio.gather(*(
                _client(url, mode, counts, i, ready, started)
                for i in range(batch, min(batch + 100, subscribers))))
        await asyncio.wait_for(ready.wait(), 60)
        reader, writer = await asyncio.open_connection("127.0.0.1", info["control"])
        writer.write(b"one\n")  # warm-up: every connection compresses once
        await reader.readline()
        await _wait_counts(counts, 1, 60)
        await asyncio.sleep(0.3)
        rss1 = server.memory_info().rss
        b0 = await _wire_bytes(info["bytes"])
        cpu0 = sum(server.cpu_times()[:2])
        t0 = time.perf_counter()
        writer.write(f"burst {messages}\n".encode())
        await reader.readline()
        await _wait_counts(counts, 1 + messages, 300)
        elapsed = time.perf_counter() - t0
        cpu1 = sum(server.cpu_times()[:2])
        b1 = await _wire_bytes(info["bytes"])
        delivered = sum(counts) - subscribers
        wire = (b1 - b0) / delivered if b1 > b0 else float("nan")
        for ws, task in clients:
            task.cancel()
            await ws.close()
        writer.close()
        return Row(mode, subscribers, messages, delivered,
                   round((cpu1 - cpu0) / delivered * 1e6, 2),
                   round((rss1 - rss0) / subscribers / 1024, 1), round(wire, 1),
                   round(delivered / elapsed))
    finally:
        proc.terminate()
        proc.wait(10)


async def _wait_counts(counts: list[int], target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while min(counts) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(c < target for c in counts)} subscribers short")
        await asyncio.sleep(0.02)


async def _wire_bytes(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    value = int((await reader.readline()).decode())
    writer.close()
    return value


def table(rows: list[Row]) -> str:
    head = ("| mode | server CPU per delivery (us) | memory per connection (KB) | "
            "bytes per delivery | deliveries/s |\n|---|---:|---:|---:|---:|\n")
    return head + "\n".join(
        f"| {r.mode} | {r.cpu_us_per_delivery} | {r.mem_kb_per_connection} | "
        f"{'-' if r.wire_bytes_per_delivery != r.wire_bytes_per_delivery else r.wire_bytes_per_delivery} | "  # noqa: E501
        f"{r.deliveries_per_s} |" for r in rows)


async def main_async(args: argparse.Namespace) -> list[Row]:
    rows = []
    for mode in args.modes:
        row = await run_mode(mode, args.subscribers, args.messages)
        print(json.dumps(asdict(row)), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    rows = asyncio.run(main_async(args))
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.subscribers} subscribers, "
          f"{args.messages} messages of ~1 KB JSON\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()

"""Server CPU per delivery of one-message turns over real sockets, without a load client.

    .venv/bin/python -m benchmarks.transport_write                       # working tree
    .venv/bin/python -m benchmarks.transport_write --ref baseline-wave2  # A/B, alternated

N subscribers, each the server end of a socket pair wrapped in the transport's
connection port, subscribed to one channel of a ``Hub`` driven by a manual
scheduler. Each publish is flushed in its own "turn", so every delivery is the
path of a paced broadcast (enqueue, mark dirty, flush, ``port.write``, one
``socket.send``) and nothing else: no event loop, no load generator, no HTTP.
``--per-turn K`` publishes K messages per turn instead (a burst: one write of K
frames per connection).
The peers drain their sockets between batches, outside the timed part. The
figure is process CPU time per delivery (``time.process_time``), which a busy
machine inflates far less than wall time; with ``--ref`` the working tree and
the revision run in alternate child processes, so their ratio is meaningful.

Older revisions' transports are supported (``TornadoPort`` over an ``IOStream``,
before the sans-I/O pump).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _port(sock: socket.socket) -> Any:
    """The connection port of this revision's transport around a connected socket."""
    try:
        from realtime_lab.protocol.connection import ServerConnection
        from realtime_lab.transports.pump import SocketPump
    except ImportError:  # before the sans-I/O pump: TornadoPort over an IOStream
        from tornado.iostream import IOStream

        try:  # issue 13 moved it to its own module
            from realtime_lab.transports.tornado_port import TornadoPort
        except ImportError:
            from realtime_lab.transports.tornado_ws import TornadoPort

        class Handler:
            ws_connection = None

            def close(self, code: int, reason: str) -> None:
                pass

        return TornadoPort(Handler(), IOStream(sock), "peer")  # type: ignore[arg-type]
    pump = SocketPump(sock, ServerConnection(), "peer", close_timeout=5.0)
    pump.start(None, None)
    return pump


def _drain(peers: list[socket.socket]) -> int:
    got = 0
    for peer in peers:
        while True:
            try:
                chunk = peer.recv(1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += len(chunk)
    return got


async def measure(subscribers: int, messages: int, size: int, batch: int,
                  per_turn: int = 1) -> dict[str, Any]:
    from realtime_lab.core import Hub, ServerOptions

    turns: list[Any] = []
    hub = Hub(ServerOptions(presence_channels=None, max_outbound_bytes=1 << 30),
              schedule=turns.append)
    peers: list[socket.socket] = []
    ports: list[Any] = []
    for _ in range(subscribers):
        a, b = socket.socketpair()
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        b.setblocking(False)
        port = _port(a)
        ports.append(port)
        peers.append(b)
        hub.subscribe(hub.open(port), "bench")

    def run_turns() -> None:
        while turns:
            turns.pop(0)()

    run_turns()
    _drain(peers)
    payload = "x" * size
    cpu = 0.0
    for start in range(0, messages, batch):
        for turn in range(start, min(messages, start + batch), per_turn):
            t0 = time.process_time()
            for n in range(turn, min(messages, start + batch, turn + per_turn)):
                hub.publish("bench", {"n": n, "pad": payload})
            run_turns()
            cpu += time.process_time() - t0
        await asyncio.sleep(0)
        _drain(peers)
    backlog = sum(port.buffered_bytes() for port in ports)
    for s in peers:
        s.close()
    deliveries = subscribers * messages
    return {"us_per_delivery": cpu / deliveries * 1e6, "deliveries": deliveries,
            "backlog": backlog}


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.subscribers, args.messages, args.size, args.batch,
                                 args.per_turn))
    print(json.dumps(result))


def run_child(args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    cmd = [sys.executable, "-m", "benchmarks.transport_write", "--child",
           "-n", str(args.subscribers), "--messages", str(args.messages),
           "--size", str(args.size), "--batch", str(args.batch),
           "--per-turn", str(args.per_turn)]
    done = subprocess.run(cmd, cwd=src or ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import source_tree

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--subscribers", type=int, default=1000)
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--batch", type=int, default=20, help="publishes between two drains")
    p.add_argument("--per-turn", type=int, default=1,
                   help="publishes per loop turn (1: paced; 200: a burst)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ref", default=None, help="also measure this git revision, alternated")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    from benchmarks.loadgen import raise_nofile_limit

    raise_nofile_limit(4 * args.subscribers + 1024)
    results: dict[str, list[float]] = {"working tree": []}
    with source_tree(args.ref) as src:
        if args.ref is not None:
            results[args.ref] = []
        for rnd in range(1, args.rounds + 1):
            for name in results:
                got = run_child(args, src if name == args.ref else None)
                results[name].append(got["us_per_delivery"])
                print(f"round {rnd} {name:<16} {got['us_per_delivery']:6.2f} us/delivery "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):.2f} us per delivery "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    if args.ref is not None:
        a, b = (statistics.median(v) for v in results.values())
        print(f"working tree / {args.ref}: {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

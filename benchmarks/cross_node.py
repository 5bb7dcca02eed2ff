"""Cross-node fan-out: subscribers split over 2 nodes on Redis vs all on a single node.

``python -m benchmarks.cross_node`` (``--smoke`` for a few seconds). Every
server runs in its own process (``realtime-lab serve``), Redis in another
(``/usr/bin/redis-server`` on a free port, no persistence) and the clients in
this process. A publisher on node A sends a burst of ``--messages`` messages
of ``--size`` bytes to one channel; the run ends when every subscriber got
every message. Server CPU (user + system, from psutil) is read per process
before and after the burst.

Scenarios:
  single      1 node, no broker, all subscribers on it (the baseline)
  single+redis 1 node with the Redis broker (what a lone node pays for the backplane)
  cross-node  2 nodes on Redis, subscribers split evenly, publisher on node A

Figures per scenario: deliveries, lost, CPU microseconds per delivery on each
node (that node's CPU / deliveries to that node's subscribers), the same for
the whole cluster (all nodes + redis-server) and the wall time of the burst.

``--history-cost``: what broker-numbered history adds per publish. Two nodes on
Redis, ``--subscribers`` split over them (default here 10), a burst of
``--messages`` to a plain channel and to a history channel (size 1000, ttl 300 s),
interleaved rounds (which channel goes first alternates); CPU microseconds
(schedstat) per published message on node A (the publisher's), node B,
redis-server and in total, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from tornado.websocket import WebSocketClientConnection, websocket_connect

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _sched_cpu(proc: psutil.Process) -> float:
    """CPU seconds of every thread of ``proc`` from /proc/PID/task/*/schedstat (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total / 1e9


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = tempfile.mkdtemp(prefix="rl-bench-redis-")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


HISTORY_CHANNEL = "bench-h"


async def _serve_node(broker: str) -> None:
    """A node with a history rule for HISTORY_CHANNEL (the CLI has no history flag)."""
    import realtime_lab
    from realtime_lab.core.history import HistoryRule

    server = await realtime_lab.serve(
        broker=broker, heartbeat_interval=600, heartbeat_timeout=600, presence_channels=None,
        history=(HistoryRule(HISTORY_CHANNEL, size=1000, ttl=300),))
    print(f"realtime_lab serving {server.url} (HTTP {server.http_url})", flush=True)
    await server.serve_forever()


class Node:
    def __init__(self, broker: str | None, *, history: bool = False) -> None:
        # a load generator far behind must not make the server close it for a late pong
        cmd = [sys.executable, "-m", "realtime_lab.cli", "serve", "--port", "0",
               "--heartbeat-interval", "600", "--heartbeat-timeout", "600"]
        if history and broker:
            cmd = [sys.executable, "-m", "benchmarks.cross_node", "--serve-node", broker]
        elif broker:
            cmd += ["--broker", broker]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        match = re.search(r"serving (ws://\S+)", line)
        if match is None:
            raise RuntimeError(f"node did not start: {line!r}")
        self.url = match.group(1)
        self.ps = psutil.Process(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _subscriber(url: str, channel: str = CHANNEL) -> WebSocketClientConnection:
    ws = await websocket_connect(url, max_message_size=16 * 1024 * 1024)
    await ws.write_message(json.dumps({"type": "subscribe", "channel": channel, "id": 1}))
    while True:
        msg = await asyncio.wait_for(ws.read_message(), 30)
        if msg is None:
            raise RuntimeError("closed while subscribing")
        if json.loads(msg).get("type") == "subscribed":
            return ws


async def _count(ws: WebSocketClientConnection, expected: int, got: list[int],
                 index: int) -> None:
    """Read until ``expected`` messages arrived; the caller bounds the time."""
    while got[index] < expected:
        msg = await ws.read_message()
        if msg is None:
            return
        if isinstance(msg, str) and msg.startswith('{"type":"message"'):
            got[index] += 1


@dataclass
class Result:
    scenario: str
    deliveries: int
    lost: int
    node_us: list[float]
    cluster_us: float
    redis_cpu_s: float
    wall_s: float


async def _run(scenario: str, subscribers: int, messages: int, size: int,
               timeout: float) -> Result:
    redis = Redis() if scenario != "single" else None
    broker = redis.url if redis else None
    nodes: list[Node] = []
    try:
        for _ in range(2 if scenario == "cross-node" else 1):
            nodes.append(Node(broker))
        split = [subscribers // len(nodes)] * len(nodes)
        split[0] += subscribers - sum(split)
        subs: list[list[WebSocketClientConnection]] = []
        for node, n in zip(nodes, split, strict=True):
            group = []
            for i in range(0, n, 100):
                group += await asyncio.gather(
                    *(_subscriber(node.url) for _ in range(min(100, n - i))))
            subs.append(group)
        publisher = await websocket_connect(nodes[0].url)
        await publisher.read_message()  # welcome
        payload = "x" * size
        cpu0 = [_cpu(n.ps) for n in nodes]
        rcpu0 = _cpu(redis.ps) if redis else 0.0
        t0 = time.perf_counter()
        counts = [[0] * len(group) for group in subs]
        readers = [asyncio.ensure_future(_count(ws, messages, counts[g], i))
                   for g, group in enumerate(subs) for i, ws in enumerate(group)]
        for i in range(messages):
            await publisher.write_message(json.dumps(
                {"type": "publish", "channel": CHANNEL, "data": {"i": i, "p": payload}}))
        done, pending = await asyncio.wait(readers, timeout=timeout)
        for task in pending:
            task.cancel()
        got = [sum(c) for c in counts]
        wall = time.perf_counter() - t0
        cpu = [_cpu(n.ps) - c for n, c in zip(nodes, cpu0, strict=True)]
        rcpu = (_cpu(redis.ps) - rcpu0) if redis else 0.0
        publisher.close()
        for group in subs:
            for ws in group:
                ws.close()
        deliveries = sum(got)
        node_us = [c / max(g, 1) * 1e6 for c, g in zip(cpu, got, strict=True)]
        return Result(scenario, deliveries, subscribers * messages - deliveries, node_us,
                      (sum(cpu) + rcpu) / max(deliveries, 1) * 1e6, rcpu, wall)
    finally:
        for node in nodes:
            node.close()
        if redis:
            redis.close()


@dataclass
class CostRow:
    channel: str
    node_a: float  # CPU us per published message
    node_b: float
    redis: float
    wall_s: float
    lost: int

    @property
    def total(self) -> float:
        return self.node_a + self.node_b + self.redis


async def _history_cost(redis: Redis, nodes: list[Node], channel: str, subscribers: int,
                        messages: int, size: int, timeout: float) -> CostRow:
    split = [subscribers - subscribers // 2, subscribers // 2]
    subs = [[await _subscriber(node.url, channel) for _ in range(n)]
            for node, n in zip(nodes, split, strict=True)]
    publisher = await websocket_connect(nodes[0].url)
    await publisher.read_message()  # welcome
    payload = "x" * size
    counts = [[0] * len(group) for group in subs]
    cpu0 = [_sched_cpu(n.ps) for n in nodes] + [_sched_cpu(redis.ps)]
    t0 = time.perf_counter()
    readers = [asyncio.ensure_future(_count(ws, messages, counts[g], i))
               for g, group in enumerate(subs) for i, ws in enumerate(group)]
    for i in range(messages):
        await publisher.write_message(json.dumps(
            {"type": "publish", "channel": channel, "data": {"i": i, "p": payload}}))
    _done, pending = await asyncio.wait(readers, timeout=timeout)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - t0
    cpu = [_sched_cpu(p) - c for p, c in zip([n.ps for n in nodes] + [redis.ps], cpu0,
                                             strict=True)]
    publisher.close()
    for group in subs:
        for ws in group:
            ws.close()
    lost = subscribers * messages - sum(sum(c) for c in counts)
    per = [c / messages * 1e6 for c in cpu]
    return CostRow(channel, per[0], per[1], per[2], wall, lost)


async def _history_cost_round(subscribers: int, messages: int, size: int, timeout: float,
                              first: str) -> dict[str, CostRow]:
    redis = Redis()
    nodes: list[Node] = []
    try:
        nodes = [Node(redis.url, history=True) for _ in range(2)]
        order = [CHANNEL, HISTORY_CHANNEL] if first == CHANNEL else [HISTORY_CHANNEL, CHANNEL]
        await _history_cost(redis, nodes, order[0], subscribers, 200, size, timeout)  # warm up
        return {ch: await _history_cost(redis, nodes, ch, subscribers, messages, size, timeout)
                for ch in order}
    finally:
        for node in nodes:
            node.close()
        redis.close()


def history_cost(args: argparse.Namespace) -> int:
    rows: dict[str, list[CostRow]] = {CHANNEL: [], HISTORY_CHANNEL: []}
    for r in range(args.rounds):
        first = CHANNEL if r % 2 == 0 else HISTORY_CHANNEL  # alternate which goes first
        got = asyncio.run(_history_cost_round(args.subscribers, args.messages, args.size,
                                              args.timeout, first))
        for ch, row in got.items():
            rows[ch].append(row)
            print(f"  {ch}: A {row.node_a:.1f} B {row.node_b:.1f} redis {row.redis:.1f} "
                  f"us/publish, lost {row.lost}, {row.wall_s:.2f} s", file=sys.stderr, flush=True)
    med = statistics.median
    print(f"history cost per publish through Redis: 2 nodes, {args.subscribers} subscribers, "
          f"{args.messages} messages of {args.size} bytes, median of {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs")
    print(f"{'channel':<10}{'node A us':>10}{'node B us':>10}{'redis us':>10}{'total us':>10}"
          f"{'lost':>6}{'wall s':>8}")
    for ch, label in ((CHANNEL, "plain"), (HISTORY_CHANNEL, "history")):
        rs = rows[ch]
        print(f"{label:<10}{med(r.node_a for r in rs):>10.1f}{med(r.node_b for r in rs):>10.1f}"
              f"{med(r.redis for r in rs):>10.1f}{med(r.total for r in rs):>10.1f}"
              f"{max(r.lost for r in rs):>6}{med(r.wall_s for r in rs):>8.2f}")
    diffs = [h.total - p.total for p, h in zip(rows[CHANNEL], rows[HISTORY_CHANNEL],
                                                strict=True)]
    print(f"history adds {med(diffs):.1f} us per publish in total (per-round differences: "
          f"{', '.join(f'{d:.1f}' for d in diffs)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--smoke", action="store_true", help="tiny run: 100 x 20, 1 round")
    parser.add_argument("--history-cost", action="store_true",
                        help="what broker-numbered history adds per publish (see above)")
    parser.add_argument("--serve-node", metavar="BROKER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_node:
        asyncio.run(_serve_node(args.serve_node))
        return 0
    if args.history_cost:
        if args.subscribers == parser.get_default("subscribers"):
            args.subscribers = 10
        if args.messages == parser.get_default("messages"):
            args.messages = 5000
        if args.smoke:
            args.messages, args.rounds = 200, 1
        return history_cost(args)
    if args.smoke:
        args.subscribers, args.messages, args.rounds = 100, 20, 1
    scenarios = ["single", "single+redis", "cross-node"]
    results: dict[str, list[Result]] = {s: [] for s in scenarios}
    for _ in range(args.rounds):
        for scenario in scenarios:  # interleaved rounds
            result = asyncio.run(_run(
                scenario, args.subscribers, args.messages, args.size, args.timeout))
            results[scenario].append(result)
            print(f"  {scenario}: {result.deliveries} deliveries, node us/delivery "
                  f"{', '.join(f'{u:.2f}' for u in result.node_us)}, "
                  f"{result.wall_s:.1f} s", file=sys.stderr, flush=True)
    print(f"cross-node fan-out: {args.subscribers} subscribers, {args.messages} messages of "
          f"{args.size} bytes, median of {args.rounds} round(s), {os.cpu_count()} CPUs")
    print(f"{'scenario':<14}{'deliveries':>11}{'lost':>6}{'node A us/dlv':>15}"
          f"{'node B us/dlv':>15}{'cluster us/dlv':>16}{'redis cpu s':>12}{'wall s':>8}")
    base = statistics.median(r.cluster_us for r in results["single"])
    for scenario, rows in results.items():
        med = statistics.median
        node_a = med(r.node_us[0] for r in rows)
        node_b = med(r.node_us[1] for r in rows) if len(rows[0].node_us) > 1 else None
        cluster = med(r.cluster_us for r in rows)
        print(f"{scenario:<14}{med(r.deliveries for r in rows):>11.0f}"
              f"{max(r.lost for r in rows):>6}{node_a:>15.2f}"
              f"{(f'{node_b:.2f}' if node_b is not None else '-'):>15}"
              f"{cluster:>10.2f} ({cluster / base:.2f}x){med(r.redis_cpu_s for r in rows):>11.3f}"
              f"{med(r.wall_s for r in rows):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

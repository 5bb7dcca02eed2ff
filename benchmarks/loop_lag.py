"""Loop lag during a large broadcast (issue 7, target 3): does a big group stall the server?

Two processes: a realtime_lab server with a 1 ms loop-lag timer (``server`` mode,
started by this script), and this script as the load: N subscribers (default
10,000) on one channel, a few *watchers* (connected, not subscribed) that count
the server's pings, and one publisher. Each phase publishes one message or a
burst (several publish frames in one ``send()``, so the server reads them in one
loop turn), waits until every subscriber has every message, then keeps
watching until the phase window ends. Per phase it reports the server's maximum
and p99 loop lag (how late the 1 ms timer fired), the time from the publish to
the last delivery, and the pings the watchers got (count and longest gap).

    .venv/bin/python -m benchmarks.loop_lag                     # working tree
    .venv/bin/python -m benchmarks.loop_lag --ref HEAD~3        # a git revision
    .venv/bin/python -m benchmarks.loop_lag -n 2000 --rounds 1  # smaller

Only 127.0.0.1 is used; the server stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tornado.ioloop import PeriodicCallback

from benchmarks.loadgen import (
    CHANNEL,
    OP_PING,
    OP_TEXT,
    Counters,
    WSClient,
    open_clients,
    raise_nofile_limit,
    text,
)
from benchmarks.run import source_tree

ROOT = Path(__file__).resolve().parent.parent
TICK = 0.001
PING_EVERY = 0.02


# ---------------------------------------------------------------------- server side


class LagTimer:
    """A 1 ms timer chain on the loop; each firing records how late it was."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lags: list[float] = []
        self.cpu: list[float] = []
        self.due = 0.0
        self.last_cpu = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.due = self.loop.time() + TICK
        self.last_cpu = time.thread_time()
        self.handle = self.loop.call_at(self.due, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        cpu = time.thread_time()
        self.lags.append(now - self.due)
        # CPU the loop thread used since the last firing, beyond the tick: the
        # work that held the timer back. On a shared machine the wall-clock lag
        # also counts time the process was not scheduled at all; this does not.
        self.cpu.append(max(0.0, cpu - self.last_cpu - TICK))
        self.last_cpu = cpu
        self.due = now + TICK
        self.handle = self.loop.call_at(self.due, self._fire)

    def reset(self) -> None:
        self.lags = []
        self.cpu = []

    def report(self) -> dict[str, float]:
        lags = sorted(self.lags) or [0.0]
        cpu = sorted(self.cpu) or [0.0]
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        return {"samples": len(self.lags), "max_lag_ms": lags[-1] * 1e3,
                "p99_lag_ms": p99 * 1e3, "over_20ms": sum(1 for x in lags if x > 0.020),
                "max_cpu_lag_ms": cpu[-1] * 1e3,
                "p99_cpu_lag_ms": cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))] * 1e3}


def _time_calls(hub: Any, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Wrap hub methods (on the instance): calls, longest call wall and CPU (thread) time.

    A name the measured revision does not have is left out (``--ref`` of an old one).
    """
    spans: dict[str, list[Any]] = {name: [0, 0.0, 0.0] for name in names}

    def wrap(name: str) -> None:
        # the outbox schedules its own flush (issue 14): time it there when there is one
        services = getattr(hub, "services", None)
        outbox = getattr(services, "outbox", None)
        owner = outbox if name == "flush" and outbox is not None else hub
        attr = name
        if name == "_fan_out" and outbox is not None and not hasattr(hub, name):
            owner, attr = outbox, "fan_out"  # the one fan-out is the outbox's (issue 14)
        method = getattr(owner, attr, None)
        if method is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                span = spans[name]
                span[0] += 1
                span[1] = max(span[1], time.perf_counter() - t)
                span[2] = max(span[2], time.thread_time() - c)

        setattr(owner, attr, timed)

    for name in names:
        wrap(name)
    return spans


DIAG = os.environ.get("LOOP_LAG_GC_DIAG") == "1"
LONGEST_GC: list[int] = [-1, 0, 0]
KINDS: dict[str, int] = {}  # generation and objects collected of the longest collection


def _time_gc() -> tuple[list[Any], list[Any]]:
    """Garbage collections (gc.callbacks): count, longest wall and CPU; all, and full (gen 2)."""
    span: list[Any] = [0, 0.0, 0.0]
    full: list[Any] = [0, 0.0, 0.0]
    started = [0.0, 0.0]
    longest = LONGEST_GC
    size = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
            if DIAG:
                gen = info.get("generation", 0)
                young = [o for g in range(gen + 1) for o in gc.get_objects(g)]
                size[0] = len(young)
                if len(young) > 20_000 and gen < 2 and not KINDS:
                    kinds = collections.Counter(type(o).__qualname__ for o in young)
                    KINDS.update(kinds.most_common(8))
                    print(f"# young generation {gen}: {len(young)} objects: {KINDS}",
                          file=sys.stderr, flush=True)
                del young
                started[:] = [time.perf_counter(), time.thread_time()]
        else:
            took = time.perf_counter() - started[0]
            cpu = time.thread_time() - started[1]
            if cpu > span[2]:  # the longest so far: which generation, how much garbage
                longest[:] = [info.get("generation", -1), info.get("collected", 0), size[0]]
            for s in (span, full) if info.get("generation") == 2 else (span,):
                s[0] += 1
                s[1] = max(s[1], took)
                s[2] = max(s[2], cpu)

    gc.callbacks.append(on_gc)
    return span, full


def gc_probe(repeat: int = 3) -> dict[str, float]:
    """What a full collection costs now: gc-tracked objects, median wall and CPU time."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.thread_time()
        gc.collect()
        walls.append(time.perf_counter() - t)
        cpus.append(time.thread_time() - c)
    kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return {"gc_objects": sum(kinds.values()), "frozen": gc.get_freeze_count(),
            "top_kinds": dict(kinds.most_common(12)),
            "full_gc_ms": statistics.median(walls) * 1e3,
            "full_gc_cpu_ms": statistics.median(cpus) * 1e3}


async def serve(args: argparse.Namespace) -> None:
    """``server`` mode: realtime_lab plus the lag timer; commands on stdin."""
    import realtime_lab

    server = await realtime_lab.serve(
        host="127.0.0.1", port=0, presence_channels=None,
        max_outbound_bytes=64 * 1024 * 1024, heartbeat_interval=args.heartbeat,
        heartbeat_timeout=max(args.heartbeat * 4, 5.0), max_connections_per_ip=100_000,
        **({"gc_freeze": True} if args.gc_freeze else {}))
    loop = asyncio.get_running_loop()
    timer = LagTimer(loop)
    timer.start()
    spans = _time_calls(server.hub, ("flush", "_fan_out", "heartbeat_tick", "_run_sweep"))
    liveness = getattr(getattr(server.hub, "services", None), "liveness", None)
    if liveness is not None:  # the sweep is the liveness service's (hub.services.liveness)
        spans.update(_time_calls(liveness, ("_run_sweep",)))
    spans["gc"], spans["gc2"] = _time_gc()
    if args.young_gc_every > 0:  # experiment: keep the young generations small
        young_gc = PeriodicCallback(lambda: gc.collect(1), args.young_gc_every * 1000)
        young_gc.start()
    heartbeat = getattr(server, "_heartbeat", None)  # the PeriodicCallback holds the method
    if heartbeat is not None:
        heartbeat.callback = server.hub.heartbeat_tick
    done = asyncio.Event()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(f"PORT {server.port}", flush=True)
    try:
        while not done.is_set():
            line = await reader.readline()
            command = line.decode().strip()
            if not line:
                break
            if command == "reset":
                timer.reset()
                for span in spans.values():
                    span[:] = [0, 0.0, 0.0]
                LONGEST_GC[:] = [-1, 0, 0]
            elif command == "gc-probe":
                print(json.dumps(gc_probe()), flush=True)
            elif command == "report":
                calls = {f"{name.strip('_')}_calls": n for name, (n, _, _) in spans.items()}
                longest = {f"{name.strip('_')}_max_ms": t * 1e3
                           for name, (_, t, _) in spans.items()}
                cpu = {f"{name.strip('_')}_max_cpu_ms": c * 1e3
                       for name, (_, _, c) in spans.items()}
                gc_info = {"longest_gc_generation": LONGEST_GC[0],
                           "longest_gc_collected": LONGEST_GC[1],
                           "longest_gc_objects": LONGEST_GC[2]}
                print(json.dumps({**timer.report(), **calls, **longest, **cpu, **gc_info}),
                      flush=True)
    finally:
        if timer.handle is not None:
            timer.handle.cancel()
        await asyncio.wait_for(server.stop(), 10.0)


# ---------------------------------------------------------------------- load side


class Watcher(WSClient):
    """A connection on no channel: records the server's pings and its own ping RTTs.

    Besides WebSocket pings (sent by the server every ``heartbeat_interval``) it
    sends a protocol ``ping`` every ``PING_EVERY`` seconds and times the ``pong``:
    a reply that waits behind a big broadcast shows up as a long round trip.
    """

    def __init__(self, counters: Counters, port: int) -> None:
        super().__init__(counters, port)
        self.pings: list[float] = []
        self.rtts: list[tuple[float, float]] = []  # (sent at, round trip)
        self.sent_at: dict[int, float] = {}

    def ping_server(self, n: int) -> None:
        self.sent_at[n] = time.perf_counter()
        self.send(text({"type": "ping", "id": n}))

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.pings.append(time.perf_counter())
        elif opcode == OP_TEXT and payload.startswith(b'{"type":"pong"'):
            sent = self.sent_at.pop(json.loads(payload).get("id"), None)
            if sent is not None:
                self.rtts.append((sent, time.perf_counter() - sent))
            return
        super()._control(opcode, payload)


async def _keep_pinging(watchers: list[Watcher]) -> None:
    n = 0
    while True:
        n += 1
        for w in watchers:
            w.ping_server(n)
        await asyncio.sleep(PING_EVERY)


@contextlib.contextmanager
def server_process(src: Path | None, heartbeat: float, gc_freeze: bool = False,
                   young_gc_every: float = 0.0) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.loop_lag", "server",
                             "--heartbeat", str(heartbeat),
                             *(["--gc-freeze"] if gc_freeze else []),
                             "--young-gc-every", str(young_gc_every)], cwd=src or ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield proc
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _line(stream: IO[bytes], timeout: float) -> str:
    line = await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)
    if not line:
        raise RuntimeError("the server process ended")
    return line.decode().strip()


async def _command(proc: subprocess.Popen[bytes], command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(command.encode() + b"\n")
    proc.stdin.flush()


async def run(args: argparse.Namespace, src: Path | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with server_process(src, args.heartbeat, args.gc_freeze, args.young_gc_every) as proc:
        assert proc.stdout is not None
        port = int((await _line(proc.stdout, 30)).split()[1])
        counters = Counters()
        loop = asyncio.get_running_loop()
        watchers: list[Watcher] = []
        for _ in range(args.watchers):
            _, w = await loop.create_connection(lambda: Watcher(Counters(), port),
                                                "127.0.0.1", port)
            await w.opened
            await w.welcomed
            watchers.append(w)
        t = time.perf_counter()
        subs = await open_clients(args.subscribers, port, counters, 300, subscribe=True)
        publisher = (await open_clients(1, port, Counters(), 30, subscribe=False))[0]
        print(f"# {args.subscribers} subscribers connected in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        if args.gc_freeze:
            await asyncio.sleep(1.5)  # the server's GcFreezer checks every second
        await _command(proc, "gc-probe")
        probe = json.loads(await _line(proc.stdout, 120))
        print(f"# server: {probe['gc_objects']} gc-tracked objects ({probe['frozen']} frozen),"
              f" full collection {probe['full_gc_ms']:.1f} ms wall,"
              f" {probe['full_gc_cpu_ms']:.1f} ms CPU (median of 3); most: {probe['top_kinds']}",
              file=sys.stderr)
        pinger = asyncio.ensure_future(_keep_pinging(watchers))
        try:
            plan = [0] + [1] * args.rounds + [args.burst] * args.rounds
            for n, count in enumerate(plan):
                await asyncio.sleep(0.5)
                counters.received = 0
                counters.expected = args.subscribers * count
                counters.done.clear()
                await _command(proc, "reset")
                await asyncio.sleep(0.05)  # the reset is read before the publish
                t0 = time.perf_counter()
                frames = b"".join(  # count 0: a quiet phase, for the baseline lag
text({"type": "publish", "channel": CHANNEL,
                                        "data": f"{n}-{i}".ljust(100, "x")})
                                  for i in range(count))
                publisher.send(frames)
                timed_out = False
                try:
                    if count:
                        await asyncio.wait_for(counters.done.wait(), args.timeout)
                except TimeoutError:
                    timed_out = True
                reach = counters.last_at - t0 if count else 0.0
                rest = args.window - (time.perf_counter() - t0)
                if rest > 0:
                    await asyncio.sleep(rest)
                t1 = time.perf_counter()
                await _command(proc, "report")
                lag = json.loads(await _line(proc.stdout, 30))
                pings = [[p for p in w.pings if t0 <= p <= t1] for w in watchers]
                gaps = [max(b - a for a, b in zip([t0, *ps], [*ps, t1], strict=True))
                        for ps in pings]
                rtts = [rtt for w in watchers for sent, rtt in w.rtts if t0 <= sent <= t1]
                unanswered = sum(1 for w in watchers for sent in w.sent_at.values()
                                 if sent < t1 - 1.0)
                rows.append({"messages": count, "pong_rtt_max_ms": max(rtts, default=0) * 1e3,
                             "pongs": len(rtts), "unanswered": unanswered,
                             "received": counters.received,
                             "expected": counters.expected, "timed_out": timed_out,
                             "reach_ms": reach * 1e3, **lag,
                             "pings_min": min(len(p) for p in pings) if pings else 0,
                             "ping_gap_max_ms": max(gaps) * 1e3 if gaps else 0.0,
                             "window_s": t1 - t0})
                print(_fmt_row(rows[-1]), file=sys.stderr)
        finally:
            pinger.cancel()
            for client in [*subs, publisher, *watchers]:
                client.close()
    return rows


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"{r['messages']:>3} msg  reach {r['reach_ms']:8.1f} ms  max lag "
            f"{r['max_lag_ms']:6.1f} ms  p99 {r['p99_lag_ms']:5.1f} ms  >20ms {r['over_20ms']:>3}"
            f"  max CPU lag {r['max_cpu_lag_ms']:6.1f} ms"
            f"  pings/watcher >= {r['pings_min']}  longest ping gap {r['ping_gap_max_ms']:6.0f} ms"
            f"  pong rtt max {r['pong_rtt_max_ms']:.1f} ms"
            f" ({r['pongs']}, {r['unanswered']} unanswered)"
            f"  received {r['received']}/{r['expected']}"
            f"  longest flush call {r['flush_max_ms']:.1f} ms"
            f" ({r['flush_calls']} calls), longest fan-out {r['fan_out_max_ms']:.1f} ms,"
            f" longest heartbeat tick {r['heartbeat_tick_max_ms']:.1f} ms"
            f" (CPU {r['heartbeat_tick_max_cpu_ms']:.1f}), sweep slice"
            f" {r.get('run_sweep_max_ms', 0.0):.1f} ms"
            f" (CPU {r.get('run_sweep_max_cpu_ms', 0.0):.1f}),"
            f" longest gc {r['gc_max_ms']:.1f} ms (CPU {r['gc_max_cpu_ms']:.1f}, {r['gc_calls']}),"
            f" longest full gc {r['gc2_max_ms']:.1f} ms"
            f" (CPU {r['gc2_max_cpu_ms']:.1f}, {r['gc2_calls']}); longest gc: generation"
            f" {r.get('longest_gc_generation', -1)}, {r.get('longest_gc_collected', 0)} collected"
            f" of {r.get('longest_gc_objects', 0)} (LOOP_LAG_GC_DIAG=1)")


def summary(rows: list[dict[str, Any]]) -> str:
    out = []
    for count in sorted({r["messages"] for r in rows}):
        rs = [r for r in rows if r["messages"] == count]
        out.append(f"{count:>3} msg x {len(rs)}: max lag {max(r['max_lag_ms'] for r in rs):.1f} ms"
                   f" (median of maxima {statistics.median(r['max_lag_ms'] for r in rs):.1f}),"
                   f" p99 {statistics.median(r['p99_lag_ms'] for r in rs):.1f} ms,"
                   f" max CPU lag {max(r['max_cpu_lag_ms'] for r in rs):.1f} ms"
                   f" (median of maxima {statistics.median(r['max_cpu_lag_ms'] for r in rs):.1f}),"
                   f" reach {statistics.median(r['reach_ms'] for r in rs):.0f} ms,"
                   f" pings/watcher >= {min(r['pings_min'] for r in rs)},"
                   f" longest ping gap {max(r['ping_gap_max_ms'] for r in rs):.0f} ms,"
                   f" longest pong wait {max(r['pong_rtt_max_ms'] for r in rs):.1f} ms,"
                   f" longest heartbeat tick {max(r['heartbeat_tick_max_ms'] for r in rs):.1f} ms"
                   f" (CPU {max(r['heartbeat_tick_max_cpu_ms'] for r in rs):.1f}),"
                   f" longest gc {max(r['gc_max_ms'] for r in rs):.1f} ms"
                   f" (CPU {max(r['gc_max_cpu_ms'] for r in rs):.1f};"
                   f" full: {sum(r['gc2_calls'] for r in rs)},"
                   f" longest {max(r['gc2_max_cpu_ms'] for r in rs):.1f} ms CPU),"
                   f" lost {sum(r['expected'] - r['received'] for r in rs)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="load", choices=("load", "server"))
    p.add_argument("-n", "--subscribers", type=int, default=10_000)
    p.add_argument("--watchers", type=int, default=4)
    p.add_argument("--burst", type=int, default=10, help="messages in one burst")
    p.add_argument("--rounds", type=int, default=3, help="phases of each kind")
    p.add_argument("--heartbeat", type=float, default=25.0,
                   help="server ping interval (s); the default is the server's")
    p.add_argument("--window", type=float, default=3.0, help="seconds watched per phase")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--ref", default=None, help="measure this git revision of realtime_lab/")
    p.add_argument("--gc-freeze", action="store_true",
                   help="run the server with ServerOptions(gc_freeze=True)")
    p.add_argument("--young-gc-every", type=float, default=0.0, metavar="S",
                   help="experiment: the server runs gc.collect(1) every S seconds")
    p.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    args = p.parse_args(argv)
    if args.mode == "server":
        raise_nofile_limit(65536)
        asyncio.run(serve(args))
        return 0
    raise_nofile_limit(args.subscribers + args.watchers + 1024)
    with source_tree(args.ref) as src:
        rows = asyncio.run(run(args, src))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    print(summary(rows))
    lost = sum(r["expected"] - r["received"] for r in rows)
    return 2 if lost else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

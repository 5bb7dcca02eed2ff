"""The fan-out experiment: subscribers in a separate process, the server in this one.

``await fanout_sweep(server, [10, 100, 1000])`` runs, for each subscriber count,
a load-generator process (:mod:`realtime_lab.instrument.loadgen`), measures the
memory the server grew per connection while they connected, then sends bursts
and measures the server's CPU per delivery (CPU time of this thread, where the
event loop runs, so the clients' work is not counted) and the delivery latency
seen by the clients. Used by notebook 03 and benchmarks/recorder_overhead.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime_lab.instrument import memory
from realtime_lab.instrument.frames import pandas

if TYPE_CHECKING:
    import pandas as pd

    from realtime_lab.server import LabServer


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class LoadProcess:
    """A running load generator, spoken to with JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, subscribers: int, channel: str,
                    timeout: float = 120.0) -> LoadProcess:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime_lab.instrument.loadgen", url,
            "--subscribers", str(subscribers), "--channel", channel,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=16 * 1024 * 1024)
        load = cls(proc)
        ready = await load.read(timeout)
        if ready.get("event") != "ready":
            raise RuntimeError(f"load generator did not start: {ready!r}")
        return load

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"load generator exited with code {code}")
        return dict(json.loads(line))

    async def command(self, cmd: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def burst(self, count: int, size: int, timeout: float = 60.0,
                    pace: float = 0.0, latency: bool = True) -> dict[str, Any]:
        return await self.command({"cmd": "burst", "count": count, "size": size,
                                   "timeout": timeout, "pace": pace, "latency": latency},
                                  timeout + 30)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, TimeoutError, ConnectionError):
                await self.command({"cmd": "quit"}, 30)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class BurstResult:
    """One burst: deliveries, server CPU and the client-side latencies."""

    deliveries: int
    cpu_s: float
    wall_s: float
    received: int
    expected: int
    latency_ms: list[float]

    @property
    def cpu_us_per_delivery(self) -> float:
        return 1e6 * self.cpu_s / self.deliveries if self.deliveries else float("nan")


async def measured_burst(server: LabServer, load: LoadProcess, count: int,
                         size: int, pace: float = 0.0, latency: bool = True) -> BurstResult:
    """Send one burst and measure this thread's CPU until the clients have everything."""
    d0 = server.inspect(connections=False).counters["deliveries"]
    c0, w0 = time.thread_time(), time.perf_counter()
    reply = await load.burst(count, size, pace=pace, latency=latency)
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    d1 = server.inspect(connections=False).counters["deliveries"]
    return BurstResult(d1 - d0, cpu, wall, int(reply["received"]),
                       int(reply["expected"]), list(reply["latency_ms"]))


def _progress(steps: Sequence[int], show: bool) -> Iterable[int]:
    """``steps`` wrapped in a tqdm.auto bar (when wanted and installed)."""
    if not show:
        return steps
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the notebook extra
        return steps
    return tqdm(steps, desc="fan-out sweep", unit="step", leave=True)


async def _settle(server: LabServer, subscribers: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (server.inspect(connections=False).connection_count > subscribers
           and time.monotonic() < deadline):
        await asyncio.sleep(0.02)


async def fanout_sweep(server: LabServer, subscribers: Sequence[int] = (10, 100, 500, 1000, 2000),
                       *, burst: int = 20, size: int = 100, bursts: int = 2,
                       trace_memory: bool = True,
                       progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the sweep; return ``(summary, latencies)`` DataFrames.

    ``summary`` has one row per subscriber count: ``subscribers``, ``deliveries``,
    ``lost``, ``cpu_us_per_delivery`` (median over bursts), ``deliveries_per_s``,
    ``latency_p50_ms`` / ``p90`` / ``p99``, ``heap_bytes_per_connection`` (traced
    Python heap growth while they connected; NaN when ``trace_memory`` is off) and
    ``rss_bytes_per_connection``. ``latencies`` has ``subscribers`` and ``latency_ms``
    (a sample of up to 2000 deliveries per burst). A recorder attached to the
    server gets a sample of the same latencies by itself: the load generator
    reports them with ``receipts``. ``progress`` shows a ``tqdm.auto`` bar (a
    widget in a notebook, text elsewhere) when tqdm is installed.
    """
    pdm = pandas()
    pattern = server.options.presence_channels
    if pattern is not None and fnmatch.fnmatchcase("fanout-1", pattern):
        warnings.warn("presence is on for the sweep's channels: every join sends a presence "
                      "diff to all subscribers (N^2 deliveries); serve with "
                      "presence_channels=None for a clean measurement", stacklevel=2)
    raise_fd_limit(2 * max(subscribers) + 512)
    rows: list[dict[str, Any]] = []
    lat_rows: list[pd.DataFrame] = []
    for n in _progress(subscribers, progress):
        channel = f"fanout-{n}"
        base = server.inspect(connections=False).connection_count
        rss0 = memory.rss_bytes()
        traced = trace_memory and not tracemalloc.is_tracing()
        if traced:
            tracemalloc.start()
        heap0, _ = memory.heap_bytes()
        load = await LoadProcess.start(server.url, n, channel)
        try:
            heap1, _ = memory.heap_bytes()
            if traced:
                tracemalloc.stop()
            rss1 = memory.rss_bytes()
            grown = max(1, server.inspect(connections=False).connection_count - base)
            results = [await measured_burst(server, load, burst, size) for _ in range(bursts)]
        finally:
            await load.close()
            await _settle(server, base)
        lat = [x for r in results for x in r.latency_ms]
        s = pdm.Series(lat, dtype="float64")
        deliveries = sum(r.deliveries for r in results)
        cpu = pdm.Series([r.cpu_us_per_delivery for r in results])
        rows.append({
            "subscribers": n,
            "deliveries": deliveries,
            "lost": sum(r.expected - r.received for r in results),
            "cpu_us_per_delivery": float(cpu.median()),
            "deliveries_per_s": deliveries / sum(r.wall_s for r in results),
            "latency_p50_ms": float(s.quantile(0.5)) if len(s) else float("nan"),
            "latency_p90_ms": float(s.quantile(0.9)) if len(s) else float("nan"),
            "latency_p99_ms": float(s.quantile(0.99)) if len(s) else float("nan"),
            "heap_bytes_per_connection": (heap1 - heap0) / grown if traced else float("nan"),
            "rss_bytes_per_connection": (rss1 - rss0) / grown,
        })
        lat_rows.append(pdm.DataFrame({"subscribers": n, "latency_ms": s}))
    return pdm.DataFrame(rows), pdm.concat(lat_rows, ignore_index=True)


async def record_sweep(out: str, subscribers: Sequence[int], *, burst: int, size: int,
                       bursts: int) -> dict[str, Any]:
    """Run :func:`fanout_sweep` on a fresh server with a recorder; write CSVs under ``out``."""
    from pathlib import Path

    from realtime_lab.instrument.frames import save
    from realtime_lab.server import serve

    server = await serve(port=0, presence_channels=None)
    rec = server.record()
    try:
        summary, latency = await fanout_sweep(server, subscribers, burst=burst, size=size,
                                              bursts=bursts)
    finally:
        rec.stop()
        await server.stop()
    latency["latency_ms"] = latency["latency_ms"].round(4)
    tables = {"summary": summary, "latency": latency,
              "broadcasts": rec.to_frame("broadcasts"), "memory": rec.to_frame("memory")}
    meta = {"command": "python -m realtime_lab.instrument.experiment " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "subscribers": list(subscribers), "burst": burst, "size": size, "bursts": bursts}
    save(tables, Path(out), meta=meta, format="csv")
    return meta


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m realtime_lab.instrument.experiment --out data/fanout_sweep``."""
    import argparse

    parser = argparse.ArgumentParser(description="Record a fan-out sweep into CSV files.")
    parser.add_argument("--out", default="data/runs/fanout_sweep")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10, 100, 500, 1000, 2000])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--bursts", type=int, default=3)
    args = parser.parse_args(argv)
    asyncio.run(record_sweep(args.out, args.subscribers, burst=args.burst, size=args.size,
                             bursts=args.bursts))
    print(f"sweep written to {args.out}/")


if __name__ == "__main__":
    main()

"""The demo: a server with a simulated classroom, a progress bar, and a recorded report.

Simulated clients join rooms, chat at random intervals, and now and then leave
and come back, so the live summary shows connections, channels, presence and
throughput changing. A :class:`~realtime_lab.instrument.Recorder` records the
run; at the end the DataFrames and a PNG report are written under ``out``
(default ``data/``): ``demo_metrics.csv`` (one summary row a second) and
``demo_run/`` (every recorded table, ``report.png``). The server, and its
browser page, stay reachable while the demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from realtime_lab.client import connect
from realtime_lab.core.options import ServerOptions
from realtime_lab.errors import MissingDependency, RealtimeLabError
from realtime_lab.instrument import Recorder
from realtime_lab.server import LabServer

log = logging.getLogger("realtime_lab.demo")

ROOMS = ("lobby", "physics", "history")
NAMES = ("ada", "bob", "cleo", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea")


async def _listen(client: Any) -> None:
    """Read what the room sends (the client reports latencies to the recorder by itself)."""
    with contextlib.suppress(RealtimeLabError, asyncio.CancelledError):
        async for _ in client:
            pass


async def simulated_client(url: str, name: str, stop: asyncio.Event,
                           rng: random.Random) -> None:
    """Join a room, chat, sometimes leave and come back, until ``stop`` is set."""
    while not stop.is_set():
        try:
            client = await connect(url, user=name)
        except (TimeoutError, OSError, RealtimeLabError):
            await asyncio.sleep(0.5)
            continue
        reader = asyncio.create_task(_listen(client))
        try:
            room = rng.choice(ROOMS)
            await client.subscribe(room)
            for _ in range(rng.randint(5, 30)):
                if stop.is_set():
                    break
                await client.publish(room, {"text": f"hello from {name}", "at": time.time()})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.uniform(0.05, 0.6))
        except RealtimeLabError:
            pass
        finally:
            await client.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.2, 1.5))


def _summary_row(server: LabServer, started: float) -> dict[str, float | int]:
    stats = server.hub.stats
    members = sum(len(c.members) for c in server.hub.channels.values())
    return {
        "t": round(time.monotonic() - started, 2),
        "connections": len(server.hub.sessions),
        "channels": len(server.hub.channels),
        "members": members,
        "published": stats.published,
        "deliveries": stats.deliveries,
    }


class _Progress:
    """A tqdm bar over the demo's seconds with the live summary as its postfix.

    Falls back to a plain carriage-return line when tqdm is not installed.
    """

    def __init__(self, duration: float) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the notebook extra
            self.bar = None
        else:
            self.bar = tqdm(total=round(duration, 1), unit="s", desc="demo", file=sys.stdout,
                            bar_format="{desc} {bar:20} {n:.0f}/{total:.0f} s{postfix}",
                            dynamic_ncols=True, mininterval=0.25)

    def update(self, elapsed: float, summary: str) -> None:
        if self.bar is None:
            sys.stdout.write(f"\r t={elapsed:5.1f}s {summary}")
            sys.stdout.flush()
            return
        self.bar.n = min(elapsed, float(self.bar.total))
        self.bar.set_postfix_str(summary, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print()


def _summary_line(row: dict[str, float | int], rate: float, rec: Recorder) -> str:
    latency = rec.tables["latency"]
    lat = ""
    if len(latency):
        i = (latency.count - 1) % latency.capacity
        lat = f"  latency={latency.data['latency_ms'][i]:.1f}ms"
    return (f"conns={row['connections']:3d} channels={row['channels']} "
            f"members={row['members']:3d} published={row['published']:6d} "
            f"delivered={row['deliveries']:6d} ({rate:.0f}/s){lat}")


def write_report(rec: Recorder, out: Path) -> tuple[dict[str, Path], Path | None]:
    """Save the recorder's tables under ``out`` and plot ``out/report.png``."""
    paths = rec.save(out)
    png: Path | None = out / "report.png"
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from realtime_lab import plot

        plot.report(rec.frames(), png, title="realtime_lab demo: a simulated classroom")
    except (ImportError, MissingDependency) as exc:  # pragma: no cover - notebook extra
        log.warning("no PNG report: %s", exc)
        png = None
    return paths, png


async def run_demo(options: ServerOptions, *, host: str = "127.0.0.1", port: int = 8765,
                   duration: float = 20.0, clients: int = 12, out: str = "data",
                   stop: asyncio.Event | None = None) -> Path:
    """Run the demo for ``duration`` seconds; return the path of the metrics CSV.

    Setting ``stop`` (the command line sets it on SIGTERM or SIGINT) ends the run
    early; the server is stopped and what was recorded is written all the same.
    """
    server = await LabServer(options, host=host, port=port).start()
    print(f"realtime_lab demo: server at {server.url} (HTTP {server.http_url}), "
          f"{clients} simulated clients, {duration:.0f} s", flush=True)
    print(f"open {server.http_url}/ in a browser to watch; Ctrl-C or SIGTERM stops early",
          flush=True)
    rec = server.record(interval=0.5)
    stopped = stop or asyncio.Event()  # set from outside: end early
    halt = asyncio.Event()  # tells the simulated clients to leave
    rng = random.Random(7)
    names = [NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i)) for i in range(clients)]
    tasks = [asyncio.create_task(simulated_client(server.url, n, halt, rng)) for n in names]
    started = time.monotonic()
    rows: list[dict[str, float | int]] = []
    progress = _Progress(duration)
    last = (started, 0)
    next_row = started + 1.0
    row: dict[str, float | int] | None = None
    try:
        while (now := time.monotonic()) - started < duration and not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(),
                                       min(0.5, max(0.0, duration - (now - started))))
            now = time.monotonic()
            row = _summary_row(server, started)
            rate = (int(row["deliveries"]) - last[1]) / max(1e-9, now - last[0])
            last = (now, int(row["deliveries"]))
            if now >= next_row:
                rows.append(row)
                next_row += 1.0
            progress.update(now - started, _summary_line(row, rate, rec))
        if row is not None and (not rows or rows[-1] is not row):
            rows.append(row)  # the last summary, also when stopped between two rows
    finally:
        progress.close()
        halt.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        rec.stop()
        await server.stop()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    csv_path = path / "demo_metrics.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["t"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"metrics written to {csv_path}")
    try:
        tables, png = write_report(rec, path / "demo_run")
    except MissingDependency as exc:
        print(f"no recorded tables or report: {exc}")
        return csv_path
    print(f"recorded tables written to {path / 'demo_run'}/ "
          f"({', '.join(sorted(p.name for p in tables.values()))})")
    if png is not None:
        print(f"report written to {png}")
    return csv_path

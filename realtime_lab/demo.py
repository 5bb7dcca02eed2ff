"""The demo: a server with simulated clients, a live one-line summary, metrics in a CSV.

Simulated clients join rooms, chat at random intervals, and now and then leave
and come back, so the summary shows connections, channels, presence and
throughput changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import sys
import time
from pathlib import Path

from realtime_lab.client import connect
from realtime_lab.core.options import ServerOptions
from realtime_lab.errors import RealtimeLabError
from realtime_lab.server import LabServer

ROOMS = ("lobby", "physics", "history")
NAMES = ("ada", "bob", "cleo", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea")


async def simulated_client(url: str, name: str, stop: asyncio.Event, rng: random.Random) -> None:
    """Join a room, chat, sometimes leave and come back, until ``stop`` is set."""
    while not stop.is_set():
        try:
            client = await connect(url, user=name)
        except (OSError, RealtimeLabError, asyncio.TimeoutError):
            await asyncio.sleep(0.5)
            continue
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


async def run_demo(options: ServerOptions, *, host: str = "127.0.0.1", port: int = 8765,
                   duration: float = 20.0, clients: int = 12, out: str = "data") -> Path:
    """Run the demo for ``duration`` seconds; return the path of the metrics CSV."""
    server = await LabServer(options, host=host, port=port).start()
    print(f"realtime_lab demo: server at {server.url} (HTTP {server.http_url}), "
          f"{clients} simulated clients, {duration:.0f} s", flush=True)
    stop = asyncio.Event()
    rng = random.Random(7)
    names = [NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i)) for i in range(clients)]
    tasks = [asyncio.create_task(simulated_client(server.url, n, stop, rng)) for n in names]
    started = time.monotonic()
    rows: list[dict[str, float | int]] = []
    last_deliveries = 0
    try:
        while time.monotonic() - started < duration:
            await asyncio.sleep(1.0)
            row = _summary_row(server, started)
            rate = row["deliveries"] - last_deliveries
            last_deliveries = int(row["deliveries"])
            rows.append(row)
            line = (f"\r t={row['t']:5.1f}s  connections={row['connections']:3d}  "
                    f"channels={row['channels']}  members={row['members']:3d}  "
                    f"published={row['published']:6d}  delivered={row['deliveries']:6d} "
                    f"({rate}/s)")
            sys.stdout.write(line)
            sys.stdout.flush()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
    print()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    csv_path = path / "demo_metrics.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["t"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"metrics written to {csv_path}")
    return csv_path

"""A load experiment: what does one more subscriber cost this server?

For each subscriber count, a load generator in a second process connects that many
WebSocket clients to one channel, the server publishes bursts to them, and the script
prints one line per step: server CPU per delivery, delivery latency percentiles and
memory per connection (docs/howto/measure-broadcast.md explains how to read them).
The recorded tables go to a run folder that ``realtime_lab.instrument.load`` reads.

    python examples/load_experiment.py [--subscribers 10 100 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import realtime_lab
from realtime_lab.instrument.experiment import fanout_sweep

COLUMNS = ("subscribers", "lost", "cpu_us_per_delivery", "latency_p50_ms", "latency_p99_ms",
           "heap_bytes_per_connection")


async def main(subscribers: list[int], bursts: int, out: Path | None) -> None:
    # Presence off: with it, every join sends a diff to every subscriber (N^2 messages).
    server = await realtime_lab.serve(port=0, presence_channels=None)
    recorder = server.record()  # stamps messages with their send time: latency
    print("  ".join(f"{c:>16}" for c in COLUMNS), flush=True)
    try:
        for n in subscribers:
            summary, _ = await fanout_sweep(server, [n], bursts=bursts, progress=False)
            row = summary.iloc[0]
            counts = [f"{int(row[c]):>16}" for c in COLUMNS[:2]]
            figures = [f"{float(row[c]):>16.2f}" for c in COLUMNS[2:]]
            print("  ".join(counts + figures), flush=True)
    finally:
        recorder.stop()
        await server.stop()
    if out is not None:
        recorder.save(out)
        print(f"recorded tables in {out}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10, 100, 1000],
                        help="subscriber counts, one step each (default 10 100 1000)")
    parser.add_argument("--bursts", type=int, default=2, help="bursts per step (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="run folder for the tables")
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.bursts, args.out))

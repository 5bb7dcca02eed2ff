"""Recorder overhead: server CPU per delivery with the recorder off and on, same run.

``python benchmarks/recorder_overhead.py`` (``--smoke`` for a short run). One
server runs in this process; 1000 subscribers and a publisher run in a load
process (``realtime_lab.instrument.loadgen``). Each round publishes a burst of
200 messages of 100 bytes to all subscribers and measures the CPU time of the
server's thread (``time.thread_time``) until every subscriber has every
message. Variants are interleaved round by round so drift hits them equally:

  off         no recorder
  on          ``server.record()``: broadcast probe, 0.5 s sampling of every
              connection, channel, memory and counter, ``ts`` stamps in messages
  on-no-ts    the same without the ``ts`` stamp (no latency measurement)

Reports the median CPU us per delivery of each variant and the overhead of
``on`` and ``on-no-ts`` against ``off``; the target is at most 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import realtime_lab
from realtime_lab.instrument import Recorder
from realtime_lab.instrument.experiment import LoadProcess, measured_burst, raise_fd_limit

VARIANTS = ("off", "on", "on-no-ts")


async def run(subscribers: int, rounds: int, burst: int, size: int) -> dict[str, object]:
    raise_fd_limit(2 * subscribers + 512)
    server = await realtime_lab.serve(port=0, presence_channels=None)
    load = await LoadProcess.start(server.url, subscribers, "bench")
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    lost = 0
    try:
        await measured_burst(server, load, burst, size)  # warm-up
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                rec = None
                if variant != "off":
                    rec = Recorder(server.hub, timestamps=variant == "on").start()
                try:
                    res = await measured_burst(server, load, burst, size)
                finally:
                    if rec is not None:
                        rec.stop()
                lost += res.expected - res.received
                results[variant].append(res.cpu_us_per_delivery)
        rec = Recorder(server.hub)
        c0 = time.thread_time()
        for _ in range(20):
            rec.sample()
        sample_ms = (time.thread_time() - c0) / 20 * 1e3
    finally:
        await load.close()
        await server.stop()
    med = {v: statistics.median(xs) for v, xs in results.items()}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"python {platform.python_version()}".strip(),
        "subscribers": subscribers, "rounds": rounds, "burst": burst, "size": size,
        "lost": lost,
        "sample_tick_ms": sample_ms,
        "cpu_us_per_delivery": results,
        "median_us": med,
        "overhead_pct": {v: 100 * (med[v] / med["off"] - 1) for v in VARIANTS if v != "off"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="100 subscribers, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subscribers, args.rounds, args.burst = 100, 2, 50
    out = asyncio.run(run(args.subscribers, args.rounds, args.burst, args.size))
    print(f"recorder overhead, {out['subscribers']} subscribers, {out['rounds']} rounds of "
          f"{out['burst']} x {out['size']} B, lost {out['lost']}  ({out['date']})")
    print(f"{'variant':10} {'median us/delivery':>20}   rounds")
    for v in VARIANTS:
        xs = " ".join(f"{x:.2f}" for x in out["cpu_us_per_delivery"][v])  # type: ignore[index]
        print(f"{v:10} {out['median_us'][v]:20.3f}   {xs}")  # type: ignore[index]
    print(f"one sampling tick ({out['subscribers']} connections): "
          f"{out['sample_tick_ms']:.2f} ms of CPU (every 0.5 s by default)")
    for v, pct in out["overhead_pct"].items():  # type: ignore[union-attr]
        print(f"overhead {v}: {pct:+.1f}%")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

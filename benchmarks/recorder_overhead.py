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
  on-ts-unread  ``ts`` stamps, but the clients do not read them (the server's
              share of the stamp's cost, without the clients' parsing)

Reports the median CPU us per delivery of each variant and the overhead of
``on`` and ``on-no-ts`` against ``off``; the target is at most 5%.

The end-to-end rounds vary by +-30% on a shared 2-core machine, more than the
recorder costs, so a second, in-process measurement follows: the same hub code
(publish, fan-out, flush) on 1000 fake connections that discard their bytes,
no sockets and no other process, 200 publishes per round, variants interleaved.
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
from realtime_lab.core.hub import Hub
from realtime_lab.core.options import ServerOptions
from realtime_lab.instrument import Recorder
from realtime_lab.instrument.experiment import LoadProcess, measured_burst, raise_fd_limit
from realtime_lab.testing import NullPort

VARIANTS = ("off", "on", "on-no-ts", "on-ts-unread")


async def run(subscribers: int, rounds: int, burst: int, size: int,
              pace: float = 0.0) -> dict[str, object]:
    raise_fd_limit(2 * subscribers + 512)
    server = await realtime_lab.serve(port=0, presence_channels=None)
    load = await LoadProcess.start(server.url, subscribers, "bench")
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    lost = 0
    try:
        await measured_burst(server, load, burst, size, pace)  # warm-up
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                rec = None
                if variant != "off":
                    rec = Recorder(server.hub, timestamps=variant != "on-no-ts").start()
                try:
                    res = await measured_burst(server, load, burst, size, pace,
                                               latency=variant == "on")
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
        "pace_ms": pace * 1e3,
        "lost": lost,
        "sample_tick_ms": sample_ms,
        "cpu_us_per_delivery": results,
        "median_us": med,
        "overhead_pct": {v: 100 * (med[v] / med["off"] - 1) for v in VARIANTS if v != "off"},
    }


def hub_micro(subscribers: int, rounds: int, burst: int, size: int) -> dict[str, object]:
    """Hub-only CPU per delivery (publish + fan-out + flush) with the recorder off / on."""
    hub = Hub(ServerOptions(presence_channels=None, max_outbound_bytes=1 << 30),
              schedule=lambda cb: None)
    for i in range(subscribers):
        hub.subscribe(hub.open(NullPort(), user=f"u{i}"), "bench")
    hub.flush()
    data = {"p": "x" * size}
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds + 1):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            rec = None
            if variant != "off":
                rec = Recorder(hub, timestamps=variant != "on-no-ts").start()
            d0, c0 = hub.stats.deliveries, time.thread_time()
            for _ in range(burst):
                hub.publish("bench", data)
                hub.flush()
            cpu, n = time.thread_time() - c0, hub.stats.deliveries - d0
            if rec is not None:
                rec.stop()
            if r:  # round 0 warms up
                results[variant].append(1e6 * cpu / n)
    med = {v: statistics.median(xs) for v, xs in results.items()}
    return {"median_us": med,
            "overhead_pct": {v: 100 * (med[v] / med["off"] - 1) for v in VARIANTS if v != "off"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--pace-ms", type=float, default=0.0,
                        help="milliseconds between publishes (0: the burst at once)")
    parser.add_argument("--smoke", action="store_true", help="100 subscribers, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subscribers, args.rounds, args.burst = 100, 2, 50
    out = asyncio.run(run(args.subscribers, args.rounds, args.burst, args.size,
                          args.pace_ms / 1e3))
    print(f"recorder overhead, {out['subscribers']} subscribers, {out['rounds']} rounds of "
          f"{out['burst']} x {out['size']} B, {out['pace_ms']:g} ms apart, lost {out['lost']}  "
          f"({out['date']})")
    print(f"{'variant':10} {'median us/delivery':>20}   rounds")
    for v in VARIANTS:
        xs = " ".join(f"{x:.2f}" for x in out["cpu_us_per_delivery"][v])  # type: ignore[index]
        print(f"{v:10} {out['median_us'][v]:20.3f}   {xs}")  # type: ignore[index]
    print(f"one sampling tick ({out['subscribers']} connections): "
          f"{out['sample_tick_ms']:.2f} ms of CPU (every 0.5 s by default)")
    for v, pct in out["overhead_pct"].items():  # type: ignore[union-attr]
        print(f"overhead {v}: {pct:+.1f}%")
    micro = hub_micro(args.subscribers, max(args.rounds, 10), args.burst, args.size)
    out["hub_micro"] = micro
    print(f"in-process hub, {args.subscribers} fake connections (median us/delivery): "
          + ", ".join(f"{v} {m:.3f}" for v, m in micro["median_us"].items()))  # type: ignore[attr-defined]
    for v, pct in micro["overhead_pct"].items():  # type: ignore[attr-defined]
        print(f"in-process overhead {v}: {pct:+.1f}%")
    # one subscriber: a delivery is a broadcast, so the difference is the probe's cost
    one = hub_micro(1, max(args.rounds, 10), 2000, args.size)["median_us"]
    base = micro["median_us"]["off"]  # type: ignore[index]
    out["probe_us_per_broadcast"] = {v: one[v] - one["off"] for v in VARIANTS[1:]}  # type: ignore[index]
    for v in VARIANTS[1:]:
        cost = one[v] - one["off"]  # type: ignore[index]
        print(f"probe cost per broadcast ({v}): {cost:.2f} us = "
              f"{100 * cost / (args.subscribers * base):.2f}% of the CPU of a broadcast "
              f"to {args.subscribers}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the middleware stack (and a listening event bus) costs per delivery.

Same run, same load generator (benchmarks.loadgen, its own process), servers in
their own processes, variants interleaved round by round:

* ``none``: realtime_lab with no middleware and nobody listening to events;
* ``stack``: RateLimit (limits far above the load, so every bucket is checked and
  nothing is refused), Logging (1 % sampled, to a handler that discards), and the
  Compression policy;
* ``stack+events``: the same plus an event handler, so every event is built.

Usage: ``python -m benchmarks.middleware_cost [--rounds 3] [--subscribers 1000 10]``.
Prints a table of median server CPU microseconds per delivered message.

``--ref REV`` also measures realtime_lab as of git revision ``REV`` (e.g. ``main``) in
the same rounds, each variant right after the working tree's (the order alternates
from round to round), and adds its figures and the ratio to the table: a change's
before and after under the same load. The load average of each run is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

VARIANTS = ("none", "stack", "stack+events")


def build_stack(variant: str) -> list[Any]:
    from realtime_lab.middleware import Compression, Logging, RateLimit

    if variant == "none":
        return []
    sink = logging.getLogger("bench.middleware")
    sink.addHandler(logging.NullHandler())
    sink.setLevel(logging.INFO)
    sink.propagate = False
    return [RateLimit(per_connection=(1e6, 1_000_000), per_ip=(1e7, 10_000_000),
                      per_type={"publish": (1e6, 1_000_000)}),
            Logging(sink, sample=0.01), Compression()]


def serve(variant: str, argv: list[str]) -> None:
    """Server process: ``python -m benchmarks.middleware_cost serve VARIANT``."""
    import realtime_lab
    from benchmarks.servers._common import HOST, Stop, server_main

    async def start(args: argparse.Namespace) -> tuple[int, Stop]:
        server = await realtime_lab.serve(host=HOST, port=0, presence_channels=None,
                                          max_outbound_bytes=args.max_outbound_bytes,
                                          middleware=build_stack(variant))
        if variant.endswith("+events"):
            server.on("*", lambda event: None)
        return server.port, server.stop

    server_main(start, argv)


def measure(rounds: int, subscribers: list[int], messages: int, size: int,
            ref: str | None = None) -> None:
    from benchmarks.run import run_loadgen, server_process, source_tree
    from benchmarks.servers import ServerSpec

    rows: dict[tuple[int, str, str], list[float]] = {}
    trees = ["working tree"] + ([ref] if ref else [])
    with source_tree(ref) as ref_src:
        sources: dict[str, Path | None] = {"working tree": None}
        if ref:
            sources[ref] = ref_src
        for r in range(rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for subs in subscribers:
                count = max(messages, 20_000 // subs)
                for variant in VARIANTS:
                    for tree in order:
                        spec = ServerSpec(variant, "benchmarks.middleware_cost", variant,
                                          ("serve", variant))
                        with server_process(spec, sources[tree]) as srv:
                            result = run_loadgen(
                                ["fanout", "--port", str(srv.port), "--server-pid",
                                 str(srv.pid), "--subscribers", str(subs), "--messages",
                                 str(count), "--size", str(size), "--timeout", "60"],
                                timeout=200)
                        if result["lost"]:
                            print(f"warning: {variant} lost {result['lost']} messages",
                                  file=sys.stderr)
                        us = result["server_us_per_delivery"]
                        rows.setdefault((subs, variant, tree), []).append(us)
                        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                        print(f"round {r + 1} subscribers={subs} messages={count} "
                              f"{variant:13s} {tree:12s} {us:7.2f} us/delivery load {load:.2f}",
                              file=sys.stderr, flush=True)
    _table(rows, subscribers, messages, ref)


def _table(rows: dict[tuple[int, str, str], list[float]], subscribers: list[int],
           messages: int, ref: str | None) -> None:
    head = "| subscribers | messages | variant | server CPU us/delivery (median) | vs none |"
    rule = "|---:|---:|---|---:|---:|"
    if ref:
        head += f" {ref} | vs {ref} |"
        rule += "---:|---:|"
    print("\n" + head)
    print(rule)
    for subs in subscribers:
        base = statistics.median(rows[(subs, "none", "working tree")])
        for variant in VARIANTS:
            med = statistics.median(rows[(subs, variant, "working tree")])
            line = (f"| {subs} | {max(messages, 20_000 // subs)} | {variant} | {med:.2f} | "
                    f"{med / base:.2f}x (+{med - base:.2f} us) |")
            if ref:
                old = statistics.median(rows[(subs, variant, ref)])
                line += f" {old:.2f} | {med / old:.3f}x |"
            print(line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--ref", default=None,
                        help="also measure realtime_lab as of this git revision, interleaved")
    args = parser.parse_args(argv)
    measure(args.rounds, args.subscribers, args.messages, args.size, args.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
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


def measure(rounds: int, subscribers: list[int], messages: int, size: int) -> None:
    from benchmarks.run import run_loadgen, server_process
    from benchmarks.servers import ServerSpec

    rows: dict[tuple[int, str], list[float]] = {}
    for r in range(rounds):
        for subs in subscribers:
            count = max(messages, 20_000 // subs)
            for variant in VARIANTS:
                spec = ServerSpec(variant, "benchmarks.middleware_cost", variant,
                                  ("serve", variant))
                with server_process(spec) as (pid, port):
                    result = run_loadgen(
                        ["fanout", "--port", str(port), "--server-pid", str(pid),
                         "--subscribers", str(subs), "--messages", str(count),
                         "--size", str(size), "--timeout", "60"], timeout=200)
                if result["lost"]:
                    print(f"warning: {variant} lost {result['lost']} messages", file=sys.stderr)
                us = result["server_us_per_delivery"]
                rows.setdefault((subs, variant), []).append(us)
                print(f"round {r + 1} subscribers={subs} messages={count} {variant:13s} "
                      f"{us:7.2f} us/delivery", file=sys.stderr, flush=True)
    print("\n| subscribers | messages | variant | server CPU us/delivery (median) | vs none |")
    print("|---:|---:|---|---:|---:|")
    for subs in subscribers:
        base = statistics.median(rows[(subs, "none")])
        for variant in VARIANTS:
            med = statistics.median(rows[(subs, variant)])
            print(f"| {subs} | {max(messages, 20_000 // subs)} | {variant} | {med:.2f} | "
                  f"{med / base:.2f}x (+{med - base:.2f} us) |")


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
    args = parser.parse_args(argv)
    measure(args.rounds, args.subscribers, args.messages, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""realtime_lab under test: ``realtime_lab.serve`` with presence off.

Presence is off (``presence_channels=None``) because the peers do no presence;
``max_outbound_bytes`` is raised so a burst never trips the slow-consumer limit;
``max_connections_per_ip`` (default 10,000) is raised because every benchmark
connection comes from 127.0.0.1 and the large-group check opens 10,001;
``gc_freeze`` is on, as for a server process of its own (``realtime-lab serve
--gc-freeze``): a full garbage collection then does not walk every connection's
objects (docs/performance.md; older revisions measured with ``--ref`` lack it).

The join-storm scenario (benchmarks/join_storm.py) runs it with ``--serve-defaults``
(what ``realtime-lab serve`` gives: the default outbound bound, no gc_freeze; the
per-IP limit is still raised), with or without ``--presence`` (presence on every
channel, the default of ``serve``), on a given ``--port`` (a restart binds the
same one), and asks for ``hub.stats`` with a ``stats`` line on stdin.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import realtime_lab
from benchmarks.servers._common import HOST, Stop, server_main


async def start(args: argparse.Namespace) -> tuple[int, Stop]:
    """Start realtime_lab on 127.0.0.1 (port 0 unless ``--port``)."""
    options: dict[str, Any] = {"max_connections_per_ip": 100_000}
    if not args.presence:
        options["presence_channels"] = None
    if not args.serve_defaults:
        options["max_outbound_bytes"] = args.max_outbound_bytes
        if "gc_freeze" in realtime_lab.ServerOptions.__dataclass_fields__:
            options["gc_freeze"] = True
    server = await realtime_lab.serve(host=HOST, port=args.port, **options)
    args.report = lambda: {**dataclasses.asdict(server.hub.stats),
                           "sessions": len(server.hub.sessions)}
    return server.port, server.stop


if __name__ == "__main__":
    server_main(start)

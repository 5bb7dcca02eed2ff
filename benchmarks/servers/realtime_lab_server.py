"""realtime_lab under test: ``realtime_lab.serve`` with presence off.

Presence is off (``presence_channels=None``) because the peers do no presence;
``max_outbound_bytes`` is raised so a burst never trips the slow-consumer limit;
``max_connections_per_ip`` (default 10,000) is raised because every benchmark
connection comes from 127.0.0.1 and the large-group check opens 10,001;
``gc_freeze`` is on, as for a server process of its own (``realtime-lab serve
--gc-freeze``): a full garbage collection then does not walk every connection's
objects (docs/performance.md; older revisions measured with ``--ref`` lack it).
"""

from __future__ import annotations

import argparse

import realtime_lab
from benchmarks.servers._common import HOST, Stop, server_main


async def start(args: argparse.Namespace) -> tuple[int, Stop]:
    """Start realtime_lab on 127.0.0.1, ephemeral port."""
    extra = {"gc_freeze": True} if "gc_freeze" in realtime_lab.ServerOptions.__dataclass_fields__ \
        else {}
    server = await realtime_lab.serve(host=HOST, port=0, presence_channels=None,
                                      max_outbound_bytes=args.max_outbound_bytes,
                                      max_connections_per_ip=100_000, **extra)
    return server.port, server.stop


if __name__ == "__main__":
    server_main(start)

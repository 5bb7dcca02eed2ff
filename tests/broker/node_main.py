"""A server process for the broker tests that need options the CLI has no flag for.

``python tests/broker/node_main.py REDIS_URL GRACE [PATTERN SIZE TTL]`` serves on
127.0.0.1 port 0 with ``presence_grace=GRACE`` (and a history rule), prints the
same ``serving ws://... (HTTP http://...)`` line as ``realtime-lab serve`` and runs
until SIGINT (or SIGKILL, which is what the tests use it for).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import realtime_lab
from realtime_lab.core.history import HistoryRule


async def main(argv: list[str]) -> None:
    url, grace = argv[0], float(argv[1])
    history = (HistoryRule(argv[2], size=int(argv[3]), ttl=float(argv[4])),) \
        if len(argv) >= 5 else ()
    server = await realtime_lab.serve(broker=url, presence_grace=grace, history=history)
    print(f"realtime_lab serving {server.url} (HTTP {server.http_url})", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))

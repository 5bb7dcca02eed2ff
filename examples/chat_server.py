"""A chat server with presence.

The server serves the demo room page at ``/``: open ``http://127.0.0.1:8765/`` in two
browser tabs (or on two machines, with ``--host 0.0.0.0``), join with two names, and
talk; each tab shows who is present, and this script prints every join, leave and
state change, and every message, as the server sees them. A reconnect within
``--grace`` seconds is not announced as a leave. Ctrl-C or SIGTERM stops it: clients
get close code 1001.

    python examples/chat_server.py [--host 127.0.0.1] [--port 8765] [--grace 3]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import realtime_lab
from realtime_lab.shutdown import ShutdownSignals


def show(event: Any) -> None:
    """One line per presence change or chat message."""
    if event.type == "message.published":
        print(f"[{event.channel}] {event.user or 'server'}: {event.size} bytes", flush=True)
    elif event.type == "presence.leave":
        print(f"{event.user} left {event.channel} ({event.reason})", flush=True)
    elif event.type == "presence.update":
        print(f"{event.user} in {event.channel}: {', '.join(event.changed)}", flush=True)
    else:
        print(f"{event.user} joined {event.channel}", flush=True)


async def main(host: str, port: int, grace: float) -> None:
    server = await realtime_lab.serve(host=host, port=port, presence_grace=grace)
    server.on("presence.join", show)
    server.on("presence.leave", show)
    server.on("presence.update", show)
    server.on("message.published", show)
    print(f"chat on {server.http_url}/ (WebSocket {server.url}); Ctrl-C to stop", flush=True)
    async with ShutdownSignals() as shutdown:
        await shutdown.wait()
    await server.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 for any (default 8765)")
    parser.add_argument("--grace", type=float, default=3.0,
                        help="seconds before a disconnected member's leave is announced")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.grace))

"""Peer: the ``websockets`` library (asyncio implementation) with ``broadcast()``.

The same protocol subset as the other native servers; a publish serializes the
message once and hands it to ``websockets.asyncio.server.broadcast()``, which
frames it once and writes it to every subscriber without waiting (the
library's recommended fan-out). Compression off, as for every server here
(the load generator offers none anyway); keepalive pings at the default 20 s.
"""

from __future__ import annotations

import argparse
import json
import secrets

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.servers._common import HOST, Stop, server_main

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


async def start(args: argparse.Namespace) -> tuple[int, Stop]:
    """Start the websockets server on 127.0.0.1, ephemeral port."""
    channels: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        user = secrets.token_hex(8)
        joined: set[str] = set()
        try:
            await ws.send(_dumps({"type": "welcome", "session": user, "user": user}))
            async for message in ws:
                msg = json.loads(message)
                kind, channel = msg.get("type"), msg.get("channel")
                if kind == "publish":
                    text = _dumps({"type": "message", "channel": channel,
                                   "data": msg.get("data"), "from": user})
                    broadcast(channels.get(channel, ()), text)
                elif kind == "subscribe":
                    channels.setdefault(channel, set()).add(ws)
                    joined.add(channel)
                    await ws.send(_dumps({"type": "subscribed", "channel": channel,
                                          "id": msg.get("id")}))
        except ConnectionClosed:
            pass  # the load generator aborts its connections at the end of a run
        finally:
            for name in joined:
                channels.get(name, set()).discard(ws)

    server = await serve(handler, HOST, 0, compression=None, max_size=1 << 20)
    port = next(iter(server.sockets)).getsockname()[1]

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return port, stop


if __name__ == "__main__":
    server_main(start)

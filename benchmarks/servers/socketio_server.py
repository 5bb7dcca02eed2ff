"""Peer: python-socketio (``socketio.AsyncServer``, ASGI) served by uvicorn.

WebSocket transport only as the load generator uses it
(``/socket.io/?EIO=4&transport=websocket``). Events: ``subscribe`` (the channel
name) joins the room and answers ``subscribed``; ``publish``
(``{"channel", "data"}``) emits ``message`` to the room, which is
python-socketio's fan-out (the packet is encoded once, then sent to each
member). The Socket.IO connect acknowledgement ``40{"sid":...}`` plays the
part of ``welcome``. uvicorn runs without access log, with its
``websockets-sansio`` WebSocket implementation and its own pings off (Engine.IO
pings every 25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import socketio
import uvicorn

from benchmarks.servers._common import HOST, Stop, server_main


def make_app() -> Any:
    """The Socket.IO server and its ASGI app."""
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*",
                               transports=["websocket"], max_http_buffer_size=1 << 20)

    @sio.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, channel: str) -> None:
        await sio.enter_room(sid, channel)
        await sio.emit("subscribed", {"channel": channel}, to=sid)

    @sio.on("publish")  # type: ignore[untyped-decorator]
    async def publish(sid: str, msg: dict[str, Any]) -> None:
        channel = msg.get("channel")
        await sio.emit("message", {"channel": channel, "data": msg.get("data"), "from": sid},
                       room=channel)

    return socketio.ASGIApp(sio)


async def start(args: argparse.Namespace) -> tuple[int, Stop]:
    """Start uvicorn with the Socket.IO app on 127.0.0.1, ephemeral port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    config = uvicorn.Config(make_app(), log_level="warning", access_log=False,
                            ws="websockets-sansio", ws_ping_interval=None, lifespan="off",
                            backlog=2048, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):  # bounded wait until uvicorn listens
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    if not server.started:
        raise RuntimeError("uvicorn did not start")

    async def stop() -> None:
        server.should_exit = True
        await task

    return sock.getsockname()[1], stop


if __name__ == "__main__":
    server_main(start)

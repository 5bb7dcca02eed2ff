"""The baseline: a plain Tornado server calling ``write_message`` per subscriber.

What a developer writes first with Tornado: a set of handlers per channel, the
message serialized once per publish, then ``write_message(text)`` for each
subscriber (Tornado frames and writes it per connection). No ``set_nodelay``,
as in Tornado's own examples.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from benchmarks.servers._common import HOST, Stop, server_main

Channels = dict[str, set["FanoutHandler"]]
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class FanoutHandler(WebSocketHandler):
    """One connection: subscribe, publish; nothing else of the protocol."""

    channels: Channels
    user: str
    subscriptions: set[str]

    def initialize(self, channels: Channels) -> None:
        self.channels = channels
        self.user = secrets.token_hex(8)
        self.subscriptions = set()

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.write_message(_dumps({"type": "welcome", "session": self.user, "user": self.user}))

    def on_message(self, message: str | bytes) -> None:
        msg = json.loads(message)
        kind = msg.get("type")
        channel = msg.get("channel")
        if kind == "publish":
            text = _dumps({"type": "message", "channel": channel, "data": msg.get("data"),
                           "from": self.user})
            for handler in list(self.channels.get(channel, ())):
                try:  # noqa: SIM105 (suppress() would add a context manager per delivery)
                    handler.write_message(text)
                except WebSocketClosedError:
                    pass
        elif kind == "subscribe":
            self.channels.setdefault(channel, set()).add(self)
            self.subscriptions.add(channel)
            self.write_message(_dumps({"type": "subscribed", "channel": channel,
                                       "id": msg.get("id")}))

    def on_close(self) -> None:
        for name in self.subscriptions:
            members = self.channels.get(name)
            if members is not None:
                members.discard(self)


async def start(args: argparse.Namespace) -> tuple[int, Stop]:
    """Start the plain Tornado server on 127.0.0.1, ephemeral port."""
    channels: Channels = {}
    sockets = bind_sockets(0, address=HOST)
    http = HTTPServer(Application([(r"/ws", FanoutHandler, {"channels": channels})]))
    http.add_sockets(sockets)

    async def stop() -> None:
        http.stop()
        await http.close_all_connections()

    return sockets[0].getsockname()[1], stop


if __name__ == "__main__":
    server_main(start)

"""The presence state and metadata a client set, sent again after a reconnect."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tornado.websocket import WebSocketClientConnection

from realtime_lab.client.replies import Replies, refusals
from realtime_lab.errors import RequestFailed


class PresenceRestore:
    """The latest ``state`` and ``meta`` per channel set with ``set_presence()``."""

    def __init__(self) -> None:
        self.wanted: dict[str, dict[str, Any]] = {}

    def remember(self, channel: str, msg: dict[str, Any]) -> None:
        """The server accepted ``msg`` (a ``presence`` request): keep its state and meta."""
        wanted = self.wanted.setdefault(channel, {})
        wanted.update({k: v for k, v in msg.items() if k in ("state", "meta")})

    def forget(self, channel: str) -> None:
        self.wanted.pop(channel, None)

    async def restore(self, ws: WebSocketClientConnection, replies: Replies, timeout: float,
                      channels: Collection[str]) -> list[tuple[str, RequestFailed]]:
        """Set again what was set in ``channels`` (a new session); return the refusals."""
        wanted = [(c, w) for c, w in self.wanted.items() if c in channels]
        requests = [replies.request_on(ws, {"type": "presence", "channel": c, **w}, timeout)
                    for c, w in wanted]
        return await refusals([c for c, _ in wanted], requests)

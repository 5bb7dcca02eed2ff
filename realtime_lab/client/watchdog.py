"""The client-side heartbeat: a connection silent for too long is treated as dead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class Watchdog:
    """Tracks when the server was last heard and aborts a silent connection.

    The limit is ``heartbeat_timeout`` or, when that is None, the server's
    ``interval + timeout`` from the welcome (and from adaptive ``heartbeat``
    messages).
    """

    def __init__(self, heartbeat: bool, timeout: float | None) -> None:
        self.enabled = heartbeat
        self.timeout = timeout
        self.last_seen = 0.0
        self.limit = 0.0

    def seen(self, data: bytes = b"") -> None:
        """Any frame from the server (WebSocket pings included) is a sign of life."""
        self.last_seen = time.monotonic()

    def start(self, welcome: dict[str, Any], blocked: Callable[[], bool],
              dead: Callable[[float, float], None]) -> asyncio.Task[None] | None:
        """Watch one connection; ``dead(silence, limit)`` is called once when it is silent.

        ``blocked()`` is true while the reader waits for the user (inbox full):
        that is not silence from the server.
        """
        if not self.enabled:
            return None
        limit = self.timeout
        if limit is None:
            beat = welcome.get("heartbeat") or {}
            if "interval" not in beat:
                return None
            limit = float(beat["interval"]) + float(beat.get("timeout", beat["interval"]))
        self.limit = limit
        return asyncio.create_task(self._watch(blocked, dead))

    def changed(self, msg: dict[str, Any]) -> None:
        """An adaptive server announced a new ping interval: follow it."""
        if self.timeout is None and "interval" in msg:
            self.limit = float(msg["interval"]) + float(msg.get("timeout", msg["interval"]))

    async def _watch(self, blocked: Callable[[], bool],
                     dead: Callable[[float, float], None]) -> None:
        while True:
            limit = self.limit
            await asyncio.sleep(max(0.01, limit / 8))
            now = time.monotonic()
            if blocked():  # the reader waits for the user, not for the server
                self.last_seen = now
            elif now - self.last_seen > self.limit:
                dead(now - self.last_seen, limit)
                return

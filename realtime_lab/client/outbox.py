"""Messages sent while reconnecting: kept in order, bounded, sent after the restore."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from realtime_lab.client.replies import Replies
from realtime_lab.client.transport import write
from realtime_lab.errors import ClientError, ConnectionClosed

#: A buffered message and, for a request, the future waiting for its reply.
Outgoing = tuple[dict[str, Any], "asyncio.Future[dict[str, Any]] | None"]


class SendBufferFull(ClientError):
    """A message was sent while reconnecting and the buffer already holds ``buffer_size``."""


class Outbox:
    """The send buffer of a reconnecting client (``buffer_size`` messages at most)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: deque[Outgoing] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, message: dict[str, Any],
            reply: bool) -> asyncio.Future[dict[str, Any]] | None:
        """Keep ``message``; with ``reply`` return the future of its reply."""
        if len(self._items) >= self.size:
            raise SendBufferFull(
                f"{len(self._items)} message(s) already wait for the connection to come back "
                f"(buffer_size={self.size}); this one was not sent")
        fut = asyncio.get_running_loop().create_future() if reply else None
        self._items.append((message, fut))
        return fut

    def drop(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        """Forget the request waiting on ``fut`` (its caller timed out)."""
        for item in list(self._items):
            if item[1] is fut:
                self._items.remove(item)

    def flush(self, ws: WebSocketClientConnection, replies: Replies) -> None:
        """Write everything, in order; stop (keeping the rest) if the socket is gone."""
        while self._items:
            message, fut = self._items.popleft()
            if fut is not None and fut.done():
                continue  # the caller timed out and gave up
            if fut is not None:
                message = {**message, "id": replies.expect(fut)}
            try:
                write(ws, message)
            except WebSocketClosedError:
                if fut is not None:
                    replies.discard(message["id"])
                    message = {k: v for k, v in message.items() if k != "id"}
                self._items.appendleft((message, fut))
                return

    def fail(self, closed: ConnectionClosed) -> list[dict[str, Any]]:
        """The client gave up: requests fail with ``closed``; returns the unsent rest."""
        unsent: list[dict[str, Any]] = []
        while self._items:
            message, fut = self._items.popleft()
            if fut is None:
                unsent.append(message)
            elif not fut.done():
                fut.set_exception(closed)
        return unsent

"""Request/reply matching: every request gets a fresh id, its reply resolves a future."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Sequence
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from realtime_lab.client.transport import NotSent, write
from realtime_lab.errors import RequestFailed

#: Message types that answer a request (matched by ``id``).
REPLY_TYPES = frozenset({"subscribed", "unsubscribed", "published", "pong", "error",
                         "presence"})


class Replies:
    """Request ids and the futures waiting for their replies."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def expect(self, fut: asyncio.Future[dict[str, Any]]) -> int:
        """A fresh request id whose reply will resolve ``fut``."""
        rid = next(self._ids)
        self.pending[rid] = fut
        return rid

    def discard(self, rid: int) -> None:
        self.pending.pop(rid, None)

    def resolve(self, msg: dict[str, Any]) -> bool:
        """Hand a reply to its waiting request; False when nobody waits for ``msg``."""
        rid = msg.get("id")
        if msg.get("type") not in REPLY_TYPES or rid is None:
            return False
        fut = self.pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
            return True
        return False

    def fail_all(self, error: BaseException) -> None:
        """The connection ended: every waiting request fails with ``error``."""
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def request_on(self, ws: WebSocketClientConnection, message: dict[str, Any],
                         timeout: float) -> dict[str, Any]:
        """Send ``message`` with a fresh id on ``ws`` and wait for its reply.

        Raises :class:`NotSent` when the write fails (safe to send again) and
        :class:`~realtime_lab.errors.ConnectionClosed` when the connection ends
        before the reply.
        """
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        rid = self.expect(fut)
        try:
            try:
                await write(ws, {**message, "id": rid})
            except (WebSocketClosedError, StreamClosedError):
                raise NotSent() from None
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.discard(rid)


async def refusals(channels: Sequence[str], requests: Sequence[Awaitable[dict[str, Any]]],
                   ) -> list[tuple[str, RequestFailed]]:
    """Await pipelined requests, one per channel; return those answered with ``error``.

    Any other failure (the connection ended) is raised.
    """
    results = await asyncio.gather(*requests, return_exceptions=True)
    refused: list[tuple[str, RequestFailed]] = []
    for channel, result in zip(channels, results, strict=True):
        if isinstance(result, BaseException):
            raise result
        failure = failure_of(result)
        if failure is not None:
            refused.append((channel, failure))
    return refused


def failure_of(reply: dict[str, Any]) -> RequestFailed | None:
    """The :class:`RequestFailed` an ``error`` reply stands for; None for any other reply."""
    if reply.get("type") != "error":
        return None
    return RequestFailed(reply.get("code", "error"), reply.get("message", ""))

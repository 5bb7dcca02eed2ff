"""The client's inbox: what ``recv()`` returns, bounded for the server's messages.

Messages from the server wait for ``put`` while the inbox holds ``inbox_size``
items, so a user who stops reading stops the socket reader (and the server sees
a slow consumer). The client's own notices (a channel refused when subscribing
again after a reconnect, presence that could not be restored) are put with
``put_notice``: they never wait and are never dropped, even when the inbox is
full; they may take it past ``inbox_size`` (by at most one notice per channel
per reconnect).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

Item = dict[str, Any] | None


class Inbox:
    """A FIFO queue like :class:`asyncio.Queue`, plus :meth:`put_notice` (ignores the bound)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Item] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    async def put(self, item: Item) -> None:
        """Append ``item``, waiting while the inbox is full."""
        while self.full():
            self._writable.clear()
            await self._writable.wait()
        self._append(item)

    def put_nowait(self, item: Item) -> None:
        """Append ``item``; raise :class:`asyncio.QueueFull` when the inbox is full."""
        if self.full():
            raise asyncio.QueueFull
        self._append(item)

    def put_notice(self, item: Item) -> None:
        """Append ``item`` even when the inbox is full: a notice is never dropped."""
        self._append(item)

    def get_nowait(self) -> Item:
        """The oldest item; raise :class:`asyncio.QueueEmpty` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._readable.clear()
        if not self.full():
            self._writable.set()
        return item

    async def get(self) -> Item:
        """The oldest item, waiting for one."""
        while not self._items:
            await self._readable.wait()
        return self.get_nowait()

    def _append(self, item: Item) -> None:
        self._items.append(item)
        self._readable.set()

"""Delivery receipts: report the latency of stamped messages back to a recording server.

While a server records metrics (``server.record()``), every channel message
carries ``ts``, the server's send time. A client with ``receipts=True`` (the
default of the lab's clients) whose server announced ``receipts`` in its welcome
collects ``now - ts`` per channel and sends them in batches,
``{"type": "receipts", "channel": ..., "latency_ms": [...]}``: at most
``max_samples`` values a message and one message per channel every
``interval`` seconds, so the report costs the server a few small messages a
second however fast messages arrive. Samples outside the accepted range (a clock
far from the server's) are skipped. Nothing is sent to a server that does not
stamp or does not announce receipts (docs/protocol.md, "receipts").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from realtime_lab.protocol.messages import RECEIPT_RANGE_MS

Send = Callable[[dict[str, Any]], object]


class ReceiptBatcher:
    """Per-connection batches of latency samples, flushed on a timer or when full."""

    def __init__(self, send: Send, max_samples: int, interval: float = 0.5) -> None:
        self.send = send
        self.max_samples = max(1, max_samples)
        self.interval = interval
        self.pending: dict[str, list[float]] = {}
        self.sent = 0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_welcome(cls, welcome: dict[str, Any], send: Send,
                    interval: float = 0.5) -> ReceiptBatcher | None:
        """A batcher when the server's welcome announces receipts, else None."""
        offer = welcome.get("receipts")
        if not isinstance(offer, dict):
            return None
        limit = offer.get("max_samples")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return None
        return cls(send, limit, interval)

    def note(self, msg: dict[str, Any], now: float | None = None) -> None:
        """Take the latency of one received channel message (ignored without ``ts``)."""
        ts = msg.get("ts")
        channel = msg.get("channel")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(channel, str):
            return
        latency = round(((time.time() if now is None else now) - ts) * 1e3, 3)
        if not RECEIPT_RANGE_MS[0] <= latency <= RECEIPT_RANGE_MS[1]:
            return  # a clock far from the server's: the server would refuse it
        samples = self.pending.setdefault(channel, [])
        samples.append(latency)
        if len(samples) >= self.max_samples:
            self._send(channel, self.pending.pop(channel))
        elif self._timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop: flush() by hand
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def forget(self, channel: str) -> None:
        """Drop what was collected for a channel being left (the server would refuse it)."""
        self.pending.pop(channel, None)

    def flush(self) -> None:
        """Send every batch now."""
        self._timer = None
        pending, self.pending = self.pending, {}
        for channel, samples in pending.items():
            if samples:
                self._send(channel, samples)

    def close(self) -> None:
        """The connection ended: drop what was not sent, stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending.clear()

    def _send(self, channel: str, samples: list[float]) -> None:
        self.sent += 1
        self.send({"type": "receipts", "channel": channel, "latency_ms": samples})

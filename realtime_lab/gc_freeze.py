"""Opt-in ``gc.freeze()`` for a server holding many connections (ServerOptions.gc_freeze).

CPython's full (generation 2) collection walks every tracked object; a server
with 10,000 connections has about 270,000 of them (about 24 per connection:
Tornado handler, stream, socket, selector key, futures, the session, its
queue...) and one full collection takes 120-230 ms, far over the 20 ms the
event loop may be held. ``gc.freeze()`` moves every tracked object into a
permanent generation the collector ignores, so later collections only walk
what was created since.

:class:`GcFreezer` freezes when the server starts and again each time the
connection count has grown by a quarter (at least ``GROWTH_FLOOR``) since the
last freeze; a young-generation collection first keeps fresh garbage out of the
frozen set. Frozen objects are still freed by reference counting, but cycles
among them are not collected; so when the count falls below half of what it
was at the last freeze, it unfreezes, does one full collection and freezes
again. ``stop`` unfreezes. The freeze is process-wide: off by default because
in a notebook kernel it would freeze the user's objects too.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("realtime_lab.server")

GROWTH = 1.25
GROWTH_FLOOR = 100


class GcFreezer:
    """Keeps the long-lived connection objects out of the cycle collector's walks."""

    def __init__(self, connections: Callable[[], int]) -> None:
        self.connections = connections
        self.frozen_at = 0  # connections at the last freeze
        self.freezes = 0
        self.refreshes = 0  # unfreeze + full collection + freeze
        self.active = False

    def start(self) -> None:
        """Collect everything once, then freeze (after start-up imports and setup)."""
        gc.collect()
        gc.freeze()
        self.active = True
        self.freezes += 1
        self.frozen_at = self.connections()

    def check(self) -> None:
        """Freeze again after growth; refresh after the connections halved. Cheap."""
        if not self.active:
            return
        count = self.connections()
        if count >= max(self.frozen_at * GROWTH, self.frozen_at + GROWTH_FLOOR):
            t = time.perf_counter()
            gc.collect(1)
            gc.freeze()
            self.freezes += 1
            log.debug("gc.freeze at %d connections (%.1f ms)", count,
                      (time.perf_counter() - t) * 1e3)
            self.frozen_at = count
        elif self.frozen_at > GROWTH_FLOOR and count < self.frozen_at / 2:
            t = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.refreshes += 1
            log.debug("gc refreshed at %d connections (%.1f ms)", count,
                      (time.perf_counter() - t) * 1e3)
            self.frozen_at = count

    def stop(self) -> None:
        """Give the frozen objects back to the collector."""
        if self.active:
            self.active = False
            gc.unfreeze()

"""Log each kind of event at most once per interval, so that no client can flood the log.

A hostile or broken client can make the server meet the same problem thousands of times
a second (a bad frame, a value that cannot be encoded, ``EMFILE`` on accept). The first
occurrence of a kind is logged in full (with its traceback, if any); later ones within
``interval`` seconds are only counted, and the next line logged for that kind says how
many were held back::

    throttle = LogThrottle(logging.getLogger("realtime_lab.core"), interval=60.0)
    throttle.log("fanout_failed", logging.ERROR, "fan-out to %s failed", name, exc_info=True)

The table of kinds is bounded (``max_kinds``): kinds should be names chosen by the
code, never text taken from a client.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["LogThrottle"]


class _Kind:
    __slots__ = ("last", "held")

    def __init__(self, last: float) -> None:
        self.last = last
        self.held = 0


class LogThrottle:
    """Rate-limits log records per kind: one record per ``interval`` seconds per kind."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 256) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval!r}")
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self._kinds: OrderedDict[str, _Kind] = OrderedDict()

    def allow(self, kind: str) -> int | None:
        """``None`` when a record of ``kind`` must be held back now (and counts it);
        otherwise the number held back since the last record of that kind."""
        now = self.clock()
        entry = self._kinds.get(kind)
        if entry is None:
            self._kinds[kind] = _Kind(now)
            if len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
            return 0
        if now - entry.last < self.interval:
            entry.held += 1
            return None
        held, entry.held, entry.last = entry.held, 0, now
        self._kinds.move_to_end(kind)
        return held

    def log(self, kind: str, level: int, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` at ``level`` unless ``kind`` was logged within ``interval``.

        Returns whether the record was written. ``kwargs`` go to ``Logger.log``
        (``exc_info=True`` for a traceback).
        """
        if not self.logger.isEnabledFor(level):
            return False
        held = self.allow(kind)
        if held is None:
            return False
        if held:
            msg = f"{msg} ({held} more like this in the last {self.interval:g} s not logged)"
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def held_back(self, kind: str) -> int:
        """How many records of ``kind`` are being held back in the current interval."""
        entry = self._kinds.get(kind)
        return entry.held if entry is not None else 0

"""Adaptive heartbeat: the ping interval follows load, and pings are spread out.

With ``heartbeat_min_interval`` and ``heartbeat_max_interval`` set, the interval is

    min + (max - min) * load,  load = clamp(max(connections / heartbeat_load_connections,
                                               loop_lag / heartbeat_lag_threshold), 0, 1)

so a busy server pings less often. It moves only when the target differs by 10 %
or more, or reaches the min or max (no flapping), and the hub then tells every
client in a ``heartbeat`` message. Without them the interval is ``heartbeat_interval``, fixed.

Pings are spread two ways: each ping is made earlier by a random fraction of the
interval up to ``heartbeat_jitter``, and one tick sends at most the share of pings
that falls in one tick (``connections * tick / interval``, at least one), so a
thousand clients that connected together are not pinged in the same instant.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from realtime_lab.core.options import ServerOptions

HYSTERESIS = 0.1
LAG_SMOOTHING = 0.2


class HeartbeatPolicy:
    """The current interval, the smoothed event-loop lag and the per-tick ping budget."""

    def __init__(self, options: ServerOptions, *, rand: Callable[[], float] = random.random
                 ) -> None:
        self.options = options
        self.rand = rand
        self.adaptive = options.heartbeat_min_interval is not None
        self.min_interval = options.heartbeat_min_interval or options.heartbeat_interval
        self.max_interval = options.heartbeat_max_interval or options.heartbeat_interval
        jitter = options.heartbeat_jitter
        self.jitter = (0.1 if self.adaptive else 0.0) if jitter is None else jitter
        self.interval = self.min_interval if self.adaptive else options.heartbeat_interval
        self.timeout = options.heartbeat_timeout
        self.lag = 0.0
        self.changes = 0

    def observe_lag(self, lag: float) -> None:
        """Feed one measurement of event-loop lag (seconds late of a timer)."""
        self.lag += LAG_SMOOTHING * (max(0.0, lag) - self.lag)

    def load(self, connections: int) -> float:
        opts = self.options
        load = max(connections / opts.heartbeat_load_connections,
                   self.lag / opts.heartbeat_lag_threshold)
        return min(1.0, max(0.0, load))

    def target(self, connections: int) -> float:
        return self.min_interval + (self.max_interval - self.min_interval) * self.load(connections)

    def update(self, connections: int) -> bool:
        """Move the interval toward the load; True when it changed."""
        if not self.adaptive:
            return False
        target = round(self.target(connections), 3)
        at_bound = target in (self.min_interval, self.max_interval)
        if target == self.interval or (
                not at_bound and abs(target - self.interval) < HYSTERESIS * self.interval):
            return False
        self.interval = target
        self.changes += 1
        return True

    def ping_factor(self) -> float:
        """Fraction of the interval after which the next ping is due (1 - jitter * U)."""
        return 1.0 - self.jitter * self.rand() if self.jitter else 1.0

    def budget(self, connections: int, tick: float) -> int:
        """Most pings one tick of ``tick`` seconds may send."""
        if tick <= 0:
            return connections or 1
        return max(1, math.ceil(connections * tick / self.interval))

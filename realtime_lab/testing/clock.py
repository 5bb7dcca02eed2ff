"""Deterministic time and scheduling for a socketless :class:`~realtime_lab.core.Hub`.

``Hub(options, clock=ManualClock(), schedule=TurnScheduler())`` runs the hub
with a clock that moves only when told and a fake event loop whose callbacks
run one loop turn at a time, so tests and lessons can step through timeouts,
grace periods and time-sliced work exactly. ``hub.bind(ManualScheduler(clock))``
adds timers on that clock (the presence batch window): they run when the clock
has passed them and :meth:`ManualScheduler.run_due` is called.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class ManualClock:
    """A clock for ``Hub(clock=...)``: reads ``now``, which only the caller moves."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TurnScheduler:
    """A fake event loop for ``Hub(schedule=...)``: callbacks scheduled during a
    turn run in the next one, as with ``loop.call_soon``."""

    def __init__(self) -> None:
        self.turn = 0
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def step(self) -> None:
        """One loop turn: the callbacks scheduled so far."""
        self.turn += 1
        callbacks = self.callbacks[:]
        self.callbacks.clear()
        for callback in callbacks:
            callback()

    def run(self, limit: int = 10_000) -> int:
        """Run turns until nothing is scheduled; return how many it took."""
        start = self.turn
        while self.callbacks:
            assert self.turn - start < limit, "the hub never stops scheduling"
            self.step()
        return self.turn - start


class ManualTimer:
    """A delayed call of :class:`ManualScheduler` (a ``Timer``: it can be cancelled)."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A ``Scheduler`` for ``Hub.bind`` on a :class:`ManualClock`: ``call_soon`` runs
    the callback at once (as a hub without a scheduler does), ``call_later`` keeps it
    until the clock has passed its deadline and :meth:`run_due` is called."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._timers: list[tuple[float, int, ManualTimer]] = []
        self._seq = itertools.count()

    def call_soon(self, callback: Callable[[], None]) -> None:
        callback()

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.clock.now + delay, callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
        return timer

    @property
    def waiting(self) -> int:
        """Timers not run nor cancelled yet."""
        return sum(1 for *_, t in self._timers if not t.cancelled)

    def run_due(self) -> int:
        """Run the timers whose deadline the clock has passed, in deadline order;
        return how many ran."""
        ran = 0
        while self._timers and self._timers[0][0] <= self.clock.now:
            *_, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
                ran += 1
        return ran

"""Deterministic time and scheduling for a socketless :class:`~realtime_lab.core.Hub`.

``Hub(options, clock=ManualClock(), schedule=TurnScheduler())`` runs the hub
with a clock that moves only when told and a fake event loop whose callbacks
run one loop turn at a time, so tests and lessons can step through timeouts,
grace periods and time-sliced work exactly.
"""

from __future__ import annotations

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

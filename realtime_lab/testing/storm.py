"""Measures of a reconnect storm: how attempt times spread, how fast all recovered."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def max_window_share(times: Sequence[float], window: float = 0.1) -> float:
    """The largest share of ``times`` that falls in any interval of length ``window``."""
    if not times:
        return 0.0
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        j = bisect.bisect_right(ordered, start + window)
        best = max(best, j - i)
    return best / len(ordered)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class StormReport:
    """A reconnect storm in numbers (seconds relative to the fault).

    *planned* is when each client's jitter scheduled its first attempt (what a
    client on its own machine would do); *attempts* is when the attempts really
    started (later when the event loop is busy); *arrivals* is when connections
    reached the server (or the proxy in front of it).
    """

    clients: int
    attempts: int
    planned_p10: float
    planned_p50: float
    planned_p90: float
    planned_max: float
    planned_max_share_100ms: float
    attempts_max_share_100ms: float
    arrivals_max_share_100ms: float
    recovery_p50: float
    recovery_max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.clients} clients, {self.attempts} attempts; first attempts planned at "
                f"p10 {self.planned_p10:.3f}s p50 {self.planned_p50:.3f}s "
                f"p90 {self.planned_p90:.3f}s max {self.planned_max:.3f}s; max share in a "
                f"100 ms window: planned {self.planned_max_share_100ms:.1%}, attempts "
                f"{self.attempts_max_share_100ms:.1%}, arrivals "
                f"{self.arrivals_max_share_100ms:.1%}; all open and resubscribed after "
                f"p50 {self.recovery_p50:.3f}s, max {self.recovery_max:.3f}s")


def storm_report(planned: Sequence[float], attempts: Sequence[float],
                 arrivals: Sequence[float], recovered: Sequence[float]) -> StormReport:
    """Summarize a storm from times relative to the fault (see :class:`StormReport`)."""
    return StormReport(
        clients=len(recovered),
        attempts=len(attempts),
        planned_p10=quantile(planned, 0.1),
        planned_p50=quantile(planned, 0.5),
        planned_p90=quantile(planned, 0.9),
        planned_max=max(planned, default=float("nan")),
        planned_max_share_100ms=max_window_share(planned, 0.1),
        attempts_max_share_100ms=max_window_share(attempts, 0.1),
        arrivals_max_share_100ms=max_window_share(arrivals, 0.1),
        recovery_p50=quantile(recovered, 0.5),
        recovery_max=max(recovered, default=float("nan")),
    )

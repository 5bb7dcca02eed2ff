"""Measures of a reconnect storm: how attempt times spread, how fast all recovered."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
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


# ---------------------------------------------------------------------- storm clients
#
# ``python -m realtime_lab.testing.storm URL N [JITTER]`` runs N reconnecting clients
# in their own process (so their event loop is not the server's), subscribed to
# channel "storm". It prints ``ready``, then, once every client has reconnected
# after a fault, ``done {json}`` with the planned attempt times, the real attempt
# times and the reconnection times (``time.monotonic()``, comparable across
# processes on one machine), each client's first attempt minus its planned time
# (``late``) and the longest its event loop was late (``loop_lag_max``), then
# waits for one message on "storm" per client and prints ``received K``.

STORM_CHANNEL = "storm"


async def run_storm_clients(url: str, n: int, jitter: str = "full", batch: int = 50) -> None:
    """The client side of a storm measurement (see the comment above)."""
    import asyncio
    import json
    import sys

    from realtime_lab.client import Backoff, Client, ClientState, StateChange

    planned: dict[int, float] = {}
    first_attempts: dict[int, float] = {}
    attempts: list[float] = []
    reopened: dict[int, float] = {}
    armed = False
    everyone = asyncio.Event()

    def listener(index: int) -> Callable[[StateChange], None]:
        def on_change(change: StateChange) -> None:
            if not armed:
                return
            if change.state is ClientState.RECONNECTING and change.delay is not None:
                planned.setdefault(index, change.at + change.delay)
            elif change.state is ClientState.CONNECTING and change.attempt >= 1:
                attempts.append(change.at)
                first_attempts.setdefault(index, change.at)
            elif change.reconnected:
                reopened[index] = change.at
                if len(reopened) == n:
                    everyone.set()
        return on_change

    window = 0.0 if jitter == "none" else 0.5
    clients: list[Client] = []
    for start in range(0, n, batch):
        group = [Client(url, user=f"c{i}", reconnect=True, seed=i, backoff=Backoff(jitter=jitter),
                        reconnect_now_window=window) for i in range(start, min(n, start + batch))]
        await asyncio.gather(*(c.connect(timeout=20) for c in group))
        await asyncio.gather(*(c.subscribe(STORM_CHANNEL) for c in group))
        clients.extend(group)
    for i, client in enumerate(clients):
        client.on_state(listener(i))
    loop = asyncio.get_running_loop()
    lag = 0.0

    async def measure_loop_lag() -> None:
        # how late this process's loop ran a 10 ms timer (attempts bunch behind it)
        nonlocal lag
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lag = max(lag, loop.time() - due)

    armed = True
    print("ready", flush=True)
    watch = asyncio.ensure_future(measure_loop_lag())
    await everyone.wait()
    watch.cancel()
    done = {"planned": list(planned.values()), "attempts": attempts,
            "reopened": list(reopened.values()),
            "late": [first_attempts[i] - planned[i] for i in first_attempts if i in planned],
            "loop_lag_max": lag,
            "open": sum(c.state is ClientState.OPEN for c in clients)}
    print("done " + json.dumps(done), flush=True)
    got = await asyncio.gather(*(c.recv_message(STORM_CHANNEL, timeout=30) for c in clients),
                               return_exceptions=True)
    print(f"received {sum(isinstance(m, dict) for m in got)}", flush=True)
    await asyncio.gather(*(c.close() for c in clients))
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover - run by tests/client/test_storm.py
    import asyncio
    import sys

    asyncio.run(run_storm_clients(sys.argv[1], int(sys.argv[2]),
                                  sys.argv[3] if len(sys.argv) > 3 else "full"))

"""Time-sliced heartbeat sweep (core/liveness.py) with a fake clock and a fake loop.

``fanout_slice_seconds=0`` makes every slice one step of ``SWEEP_STEP`` sessions,
so the slicing is deterministic; ``Loop.step`` runs the callbacks scheduled so
far (one loop turn).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.liveness import PINGS_PER_SLICE, SWEEP_STEP
from realtime_lab.protocol.wire import JSON_WIRE
from realtime_lab.testing import ManualClock, TurnScheduler


class Port:

    wire = JSON_WIRE
    remote = "10.2.2.2"

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.pings: list[tuple[float, int]] = []  # (clock, turn)
        self.closed: int | None = None

    def write(self, data: bytes) -> None:
        pass

    def buffered_bytes(self) -> int:
        return 0

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        pass  # the tests drain nothing

    def ping(self) -> None:
        self.pings.append((self.loop.clock.now, self.loop.turn))

    def close(self, code: int, reason: str) -> None:
        self.closed = code

    def abort(self) -> None:
        pass


class Loop(TurnScheduler):
    """A hub on a fake event loop (callbacks scheduled during a turn run in the next
    one) and a manual clock."""

    def __init__(self, **opts: Any) -> None:
        super().__init__()
        self.clock = ManualClock()
        options = {"presence_channels": None, **opts}
        self.hub = Hub(ServerOptions(**options), clock=self.clock, schedule=self)

    def open(self, count: int) -> list[tuple[Session, Port]]:
        out = []
        for _ in range(count):
            port = Port(self)
            out.append((self.hub.open(port), port))
        self.run()
        return out

    def tick(self) -> int:
        """One heartbeat tick and the loop turns its sweep takes."""
        self.hub.heartbeat_tick()
        return self.run()


def test_a_small_server_is_checked_in_the_tick_itself() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=0)
    clients = loop.open(50)  # <= fanout_slice_min (1000)
    loop.hub.tick_period = 2.5
    loop.clock.now = 10.0
    loop.hub.heartbeat_tick()
    assert loop.hub.services.liveness.sweep is None and loop.callbacks == []
    assert loop.hub.sweeps_sliced == 0
    assert sum(len(p.pings) for _, p in clients) == 13  # budget: ceil(50 * 2.5 / 10)


def test_a_big_server_is_swept_over_turns_and_everyone_is_visited() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=0,
                fanout_slice_min=10)
    clients = loop.open(300)
    loop.hub.tick_period = 0  # no budget: every due session is pinged
    loop.clock.now = 10.0
    loop.hub.heartbeat_tick()
    assert loop.hub.services.liveness.sweep is not None
    pinged_first = sum(1 for _, p in clients if p.pings)
    assert 0 < pinged_first <= SWEEP_STEP  # one step in the tick's own turn
    turns = loop.run()
    assert turns == math.ceil(300 / SWEEP_STEP) - 1
    assert all(len(p.pings) == 1 for _, p in clients)
    assert loop.hub.services.liveness.sweep is None and loop.hub.sweeps_sliced == 1


def test_a_tick_during_a_sweep_does_not_restart_it() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=0,
                fanout_slice_min=10)
    clients = loop.open(200)
    loop.hub.tick_period = 0
    loop.clock.now = 10.0
    loop.hub.heartbeat_tick()
    loop.step()
    loop.hub.heartbeat_tick()  # the next tick comes early (a slow sweep)
    loop.run()
    assert all(len(p.pings) == 1 for _, p in clients)  # nobody twice, nobody left out


def test_the_ping_budget_is_shared_by_the_slices_of_a_sweep() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=0,
                fanout_slice_min=10)
    clients = loop.open(400)
    loop.hub.tick_period = 1.0  # budget ceil(400 * 1 / 10) = 40 per sweep
    loop.clock.now = 10.0
    loop.tick()
    assert sum(len(p.pings) for _, p in clients) == 40
    for second in range(11, 20):  # ten sweeps of 40 reach all 400 within one interval
        loop.clock.now = float(second)
        loop.tick()
    assert all(len(p.pings) == 1 for _, p in clients)


def test_timeouts_are_still_detected_within_timeout_plus_a_tick() -> None:
    loop = Loop(heartbeat_interval=4, heartbeat_timeout=2, fanout_slice_seconds=0,
                fanout_slice_min=10)
    clients = loop.open(100)
    hub = loop.hub
    hub.tick_period = 0.5
    live = {s.id for s, _ in clients[::2]}
    closed_at: dict[str, float] = {}
    pinged_at: dict[str, float] = {}
    t = 0.0
    while t < 20.0:
        t = round(t + 0.5, 3)
        loop.clock.now = t
        loop.tick()
        for session, port in clients:
            if port.pings:
                pinged_at.setdefault(session.id, port.pings[0][0])
            if session.id in live:
                session.last_seen = t  # the client answers (any traffic counts)
            elif port.closed is not None:
                closed_at.setdefault(session.id, t)
    dead = [s for s, _ in clients if s.id not in live]
    assert all(p.closed is None for s, p in clients if s.id in live)
    assert hub.stats.heartbeat_timeouts == len(dead) == 50
    for session in dead:
        late = closed_at[session.id] - pinged_at[session.id]
        assert 2.0 <= late <= 2.0 + hub.tick_period, (session.id, late)


def test_a_session_closed_during_a_sweep_is_skipped() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=0,
                fanout_slice_min=10)
    clients = loop.open(100)
    loop.hub.tick_period = 0
    loop.clock.now = 10.0
    loop.hub.heartbeat_tick()
    last_session, last_port = clients[-1]
    loop.hub.closed(last_session)
    loop.run()
    assert last_port.pings == []
    assert all(len(p.pings) == 1 for _, p in clients[:-1])


def test_a_scheduler_that_runs_callbacks_at_once_still_finishes_the_sweep() -> None:
    loop = Loop()
    hub = Hub(ServerOptions(presence_channels=None, heartbeat_interval=10,
                            fanout_slice_seconds=0, fanout_slice_min=10), clock=loop.clock)
    ports = [Port(loop) for _ in range(100)]
    for port in ports:
        hub.open(port)
    hub.tick_period = 0
    loop.clock.now = 10.0
    hub.heartbeat_tick()
    assert hub.services.liveness.sweep is None
    assert all(len(p.pings) == 1 for p in ports)


def test_a_slice_ends_after_its_share_of_pings_so_pongs_come_back_spread() -> None:
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=60,
                fanout_slice_min=10)  # time is no limit here: only the ping cap
    clients = loop.open(1000)
    loop.hub.tick_period = 0
    loop.clock.now = 10.0
    loop.tick()
    per_turn: dict[int, int] = {}
    for _, port in clients:
        assert len(port.pings) == 1
        per_turn[port.pings[0][1]] = per_turn.get(port.pings[0][1], 0) + 1
    assert max(per_turn.values()) == PINGS_PER_SLICE
    assert len(per_turn) == math.ceil(1000 / PINGS_PER_SLICE)


def test_the_tail_of_a_sliced_sweep_is_not_cut_short() -> None:
    # 1100 sessions, slices of 128 pings: the last 1000 are below fanout_slice_min
    # but belong to a sliced sweep, so they are still checked (and pinged) in slices.
    loop = Loop(heartbeat_interval=10, heartbeat_timeout=5, fanout_slice_seconds=60,
                fanout_slice_min=1000)
    clients = loop.open(1100)
    loop.hub.tick_period = 0
    loop.clock.now = 10.0
    loop.tick()
    assert all(len(p.pings) == 1 for _, p in clients)

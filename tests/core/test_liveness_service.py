"""The Liveness service on its own (core/liveness.py): no hub, fakes for what it calls."""

from __future__ import annotations

from typing import Any

from realtime_lab.core import ServerOptions, Session
from realtime_lab.core.events import EventBus
from realtime_lab.core.liveness import Liveness
from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import ConnectionState
from realtime_lab.core.stats import HubStats
from realtime_lab.errors import ProtocolError
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.testing import ManualClock, RecordingPort, TurnScheduler


class World:
    """A Liveness wired to recording fakes, with open sessions of its own."""

    def __init__(self, schedule: Any = None, **opts: Any) -> None:
        self.clock = ManualClock()
        self.sessions: dict[str, Session] = {}
        self.closed: list[tuple[str, int]] = []
        self.rejected: list[tuple[str, str]] = []
        self.queued: list[tuple[str, bytes, Priority]] = []
        self.idle_checks: list[float] = []
        self.liveness = Liveness(
            ServerOptions(**opts), clock=self.clock, schedule=schedule or (lambda cb: cb()),
            sessions=self.sessions, stats=HubStats(), bus=EventBus(),
            enqueue=lambda s, frame, prio: self.queued.append((s.id, frame, prio)),
            mark_dirty=lambda s: None,
            close=lambda s, code, reason: self.closed.append((s.id, code)),
            reject=self.reject, check_presence_idle=self.idle)

    def reject(self, session: Session, err: ProtocolError) -> None:
        self.rejected.append((session.id, err.code))

    def idle(self, now: float) -> int:
        self.idle_checks.append(now)
        return 0

    def open(self, sid: str) -> Session:
        session = Session(id=sid, user=sid, port=RecordingPort(), connected_at=0.0,
                          state=ConnectionState.OPEN)
        self.sessions[sid] = session
        return session


def test_a_tick_pings_due_sessions_and_closes_those_that_did_not_answer() -> None:
    world = World(heartbeat_interval=10, heartbeat_timeout=5)
    a, b = world.open("a"), world.open("b")
    world.clock.now = 10.0
    world.liveness.tick()
    assert a.port.pings == b.port.pings == 1  # type: ignore[attr-defined]
    world.clock.now = 12.0
    world.liveness.pong(a)
    assert a.rtt == 2.0 and a.ping_sent_at is None and a.last_seen == 12.0
    world.clock.now = 15.0
    world.liveness.tick()
    assert world.closed == [("b", CloseCode.HEARTBEAT_TIMEOUT)]
    assert world.liveness.sweep is None and world.liveness.sweeps_sliced == 0


def test_idle_sessions_are_rejected_and_presence_idle_is_asked_each_tick() -> None:
    world = World(idle_timeout=30, presence_idle_timeout=60)
    world.open("a")
    world.clock.now = 31.0
    world.liveness.tick()
    assert world.rejected == [("a", "idle_timeout")]
    assert world.idle_checks == [31.0]


def test_an_adaptive_interval_change_is_announced_to_every_session() -> None:
    world = World(heartbeat_min_interval=5, heartbeat_max_interval=50,
                  heartbeat_load_connections=2)
    world.open("a"), world.open("b")
    world.liveness.tick()  # two connections: the load is full, the interval goes to max
    assert world.liveness.policy.interval == 50
    assert sorted(sid for sid, _, _ in world.queued) == ["a", "b"]
    assert {prio for _, _, prio in world.queued} == {Priority.CONTROL}
    assert b'"type":"heartbeat"' in world.queued[0][1]


def test_two_services_keep_their_own_sweep_state() -> None:
    loop = TurnScheduler()
    one = World(loop, fanout_slice_min=10, fanout_slice_seconds=0)
    two = World(loop, fanout_slice_min=10, fanout_slice_seconds=0)
    for i in range(100):
        one.open(str(i))
    one.liveness.tick()  # sliced: one step now, the rest in later turns
    assert one.liveness.sweep is not None and one.liveness.sweeps_sliced == 1
    assert two.liveness.sweep is None and two.liveness.sweeps_sliced == 0
    two.liveness.tick()  # no sessions: done at once, the other sweep goes on
    assert two.liveness.sweep is None and one.liveness.sweep is not None
    loop.run()
    assert one.liveness.sweep is None and one.liveness.sweeps_sliced == 1

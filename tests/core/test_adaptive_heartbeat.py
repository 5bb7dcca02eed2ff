"""Adaptive heartbeat with a fake clock: interval follows load, pings are spread, clients told."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.protocol.frames import parse_frames
from realtime_lab.protocol.wire import JSON_WIRE
from realtime_lab.testing import ManualClock


class Port:

    wire = JSON_WIRE
    remote = "10.1.1.1"

    def __init__(self) -> None:
        self.pings: list[float] = []
        self.writes: list[bytes] = []
        self.clock: ManualClock | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def buffered_bytes(self) -> int:
        return 0

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        pass  # the tests drain nothing

    def ping(self) -> None:
        assert self.clock is not None
        self.pings.append(self.clock.now)

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        frames, _ = parse_frames(b"".join(self.writes))
        return [json.loads(f.payload) for f in frames]


ADAPTIVE = {"heartbeat_min_interval": 5.0, "heartbeat_max_interval": 30.0,
            "heartbeat_load_connections": 100, "heartbeat_lag_threshold": 0.1}


def test_fixed_interval_by_default() -> None:
    hb = HeartbeatPolicy(ServerOptions(heartbeat_interval=7))
    assert not hb.adaptive and hb.interval == 7 and hb.jitter == 0 and hb.ping_factor() == 1
    assert hb.update(10_000) is False


def test_interval_follows_connections_and_lag_with_hysteresis() -> None:
    hb = HeartbeatPolicy(ServerOptions(**ADAPTIVE))
    assert hb.adaptive and hb.interval == 5.0 and hb.jitter == 0.1
    assert hb.update(0) is False
    assert hb.update(50) is True and hb.interval == pytest.approx(17.5)
    assert hb.update(52) is False, "a small change is ignored"
    assert hb.update(1000) is True and hb.interval == 30.0, "capped at the max"
    for _ in range(50):
        hb.observe_lag(0.2)  # the loop is late by 200 ms per tick
    assert hb.update(0) is False and hb.interval == 30.0, "lag alone keeps it at the max"
    for _ in range(50):
        hb.observe_lag(0.0)
    assert hb.update(0) is True and hb.interval == pytest.approx(5.0, abs=0.1)


def test_budget_spreads_pings_over_ticks() -> None:
    hb = HeartbeatPolicy(ServerOptions(heartbeat_interval=10))
    assert hb.budget(1, 0.5) == 1
    assert hb.budget(1000, 0.5) == 50
    assert hb.budget(3, 0.0) == 3


def make(n: int, **opts: Any) -> tuple[Hub, ManualClock, list[Port]]:
    clock = ManualClock()
    hub = Hub(ServerOptions(**opts), clock=clock)
    ports = []
    for _ in range(n):
        port = Port()
        port.clock = clock
        hub.open(port)
        ports.append(port)
    return hub, clock, ports


def test_thousand_simultaneous_clients_are_pinged_over_the_interval_not_at_once() -> None:
    hub, clock, ports = make(1000, heartbeat_interval=10, heartbeat_timeout=10)
    hub.tick_period = 0.5
    for _ in range(80):
        clock.now += 0.5
        hub.heartbeat_tick()
        for s in hub.sessions.values():
            hub.pong(s)
    first = sorted(p.pings[0] for p in ports)
    per_tick: dict[float, int] = {}
    for t in first:
        per_tick[t] = per_tick.get(t, 0) + 1
    assert max(per_tick.values()) <= 50, "at most connections * tick / interval per tick"
    assert first[-1] - first[0] >= 9, "spread over about one interval"
    assert all(len(p.pings) >= 3 for p in ports)
    gaps = [b - a for p in ports for a, b in zip(p.pings, p.pings[1:], strict=False)]
    assert min(gaps) >= 10 - 1e-9, "without jitter no one is pinged early"


def test_jitter_makes_pings_earlier_never_later() -> None:
    hub, clock, ports = make(200, heartbeat_interval=10, heartbeat_timeout=10,
                             heartbeat_jitter=0.2)
    for _ in range(200):
        clock.now += 0.25
        hub.heartbeat_tick()
        for s in hub.sessions.values():
            hub.pong(s)
    gaps = [b - a for p in ports for a, b in zip(p.pings, p.pings[1:], strict=False)]
    assert min(gaps) >= 8 - 0.25 and max(gaps) <= 10 + 0.25
    assert len({round(g, 2) for g in gaps}) > 3, "intervals differ from client to client"


def test_welcome_and_heartbeat_message_tell_clients_the_interval() -> None:
    hub, clock, ports = make(1, **ADAPTIVE)
    welcome = ports[0].messages()[0]
    assert welcome["heartbeat"] == {"interval": 5.0, "timeout": 20.0, "adaptive": True,
                                    "min": 5.0, "max": 30.0}
    changes: list[Any] = []
    hub.bus.subscribe(changes.append, "heartbeat.changed")
    for _ in range(60):  # 60 more connections: load 0.61
        port = Port()
        port.clock = clock
        hub.open(port)
    clock.now += 1
    hub.heartbeat_tick()
    update = ports[0].messages()[-1]
    assert update["type"] == "heartbeat" and update["interval"] == pytest.approx(20.25)
    assert changes[0].interval == update["interval"]
    later = Port()
    later.clock = clock
    hub.open(later)
    assert later.messages()[0]["heartbeat"]["interval"] == update["interval"]

"""Priorities in the per-connection outbound queue: order, overtaking, drops, slow consumers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.outbound import OutboundQueue, Priority
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import parse_frames
from realtime_lab.protocol.wire import JSON_WIRE


class FakePort:

    wire = JSON_WIRE
    remote = "10.0.0.1"

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.buffered = 0
        self.drain_callbacks: list[Callable[[], None]] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.buffered += len(data)  # nothing leaves until the test drains it

    def buffered_bytes(self) -> int:
        return self.buffered

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def abort(self) -> None:
        pass

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drain_callbacks.append(callback)

    def drain(self) -> list[dict[str, Any]]:
        """The client reads everything: the transport empties and the hub is told."""
        frames, _ = parse_frames(b"".join(self.writes))
        self.writes.clear()
        self.buffered = 0
        callbacks, self.drain_callbacks = self.drain_callbacks, []
        for cb in callbacks:
            cb()
        return [json.loads(f.payload) for f in frames]


class H:
    def __init__(self, **opts: Any) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.hub = Hub(ServerOptions(**opts), schedule=self.callbacks.append)

    def turn(self) -> None:
        while self.callbacks:
            callbacks = self.callbacks[:]
            self.callbacks.clear()  # the hub holds this list's append
            for cb in callbacks:
                cb()

    def open(self) -> tuple[Session, FakePort]:
        port = FakePort()
        s = self.hub.open(port)
        self.hub.receive_text(s, json.dumps({"type": "subscribe", "channel": "room"}))
        self.turn()
        port.drain()
        return s, port


def test_queue_keeps_arrival_order_when_everything_fits() -> None:
    q = OutboundQueue()
    q.push(b"n1", Priority.NORMAL)
    q.push(b"c1", Priority.CONTROL)
    q.push(b"l1", Priority.LOW)
    q.push(b"h1", Priority.HIGH)
    assert list(q) == [b"n1", b"c1", b"l1", b"h1"] and q == [b"n1", b"c1", b"l1", b"h1"]
    assert q.take(1000) == [b"n1", b"c1", b"l1", b"h1"] and not q and q.nbytes == 0


def test_queue_sends_control_first_when_it_does_not_fit() -> None:
    q = OutboundQueue()
    for frame, prio in [(b"l1", 0), (b"n1", 1), (b"c1", 3), (b"h1", 2), (b"l2", 0)]:
        q.push(frame, prio)
    assert q.take(4) == [b"c1", b"h1"]
    assert q.take(4) == [b"n1", b"l1"]
    assert q.take(4) == [b"l2"] and q.nbytes == 0


def test_queue_evicts_lowest_oldest_first() -> None:
    q = OutboundQueue()
    for frame, prio in [(b"n1", 1), (b"l1", 0), (b"l2", 0)]:
        q.push(frame, prio)
    assert q.evict(Priority.LOW) == (b"l1", Priority.LOW)
    assert q.evict(Priority.LOW) == (b"l2", Priority.LOW)
    assert q.evict(Priority.LOW) is None and q.counts()["normal"] == 1


def test_priority_parse() -> None:
    assert Priority.parse("high") is Priority.HIGH and Priority.parse(0) is Priority.LOW
    with pytest.raises(ValueError, match="unknown priority"):
        Priority.parse("urgent")


def test_control_overtakes_bulk_for_a_backed_up_reader() -> None:
    h = H(max_outbound_bytes=100_000, write_buffer_bytes=2_000)
    s, port = h.open()
    for i in range(20):
        h.hub.publish("room", {"i": i, "pad": "x" * 400}, priority="low")
    h.turn()
    assert port.buffered <= 2_000 + 500 and len(s.pending) > 10, "the rest waits in the queue"
    h.hub.receive_text(s, json.dumps({"type": "ping", "id": "urgent"}))
    h.hub.publish("room", "alert", priority="high")
    h.turn()
    got: list[dict[str, Any]] = []
    for _ in range(100):
        got += port.drain()
        h.turn()
        if not s.pending and not port.writes:
            break
    kinds = [m.get("id") or m["data"] if not isinstance(m.get("data"), dict)
             else m["data"]["i"] for m in got]
    pong, alert = kinds.index("urgent"), kinds.index("alert")
    assert pong < alert < kinds.index(10), "control, then high, overtake the queued low ones"
    lows = [k for k in kinds if isinstance(k, int)]
    assert lows == list(range(20)), "nothing dropped without pressure, in order"


def test_under_pressure_low_is_dropped_counted_and_control_survives() -> None:
    h = H(max_outbound_bytes=10_000, write_buffer_bytes=2_000)
    seen = []
    h.hub.bus.subscribe(seen.append, "message.dropped")
    s, port = h.open()
    sent = 60
    for i in range(sent):
        h.hub.publish("room", {"i": i, "pad": "x" * 400}, priority="low")
        h.turn()
    assert s.is_open and port.closes == []
    assert s.stats.dropped > 0 and h.hub.stats.dropped == s.stats.dropped == len(seen)
    assert {x.priority for x in seen} == {"low"} and {x.reason for x in seen} == {"queue_full"}
    assert s.pending_bytes + port.buffered <= 10_000
    h.hub.receive_text(s, json.dumps({"type": "ping", "id": 1}))
    h.hub.publish("room", "normal one")
    h.turn()
    got: list[dict[str, Any]] = []
    while port.writes or s.pending:
        got += port.drain()
        h.turn()
    assert {"type": "pong", "id": 1} in got
    assert any(m.get("data") == "normal one" for m in got)
    lows = [m["data"]["i"] for m in got if m["type"] == "message" and isinstance(m["data"], dict)]
    assert len(lows) + s.stats.dropped == sent
    assert lows == sorted(lows) and lows[-1] == sent - 1, "the oldest low ones were dropped"


def test_slow_consumer_closed_only_when_nothing_droppable_is_left() -> None:
    h = H(max_outbound_bytes=10_000, write_buffer_bytes=2_000)
    s, port = h.open()
    healthy, hport = h.open()
    for i in range(5):
        h.hub.publish("room", {"i": i, "pad": "x" * 400}, priority="low")
    h.turn()
    hport.drain()
    for _ in range(40):
        h.hub.publish("room", "y" * 400)  # normal: never dropped
        h.turn()
        hport.drain()
        if not s.is_open:
            break
    assert port.closes == [(CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")]
    assert s.stats.dropped >= 1, "the low ones went first"
    assert healthy.is_open and hport.closes == []


def test_droppable_none_closes_at_once() -> None:
    h = H(max_outbound_bytes=5_000, write_buffer_bytes=1_000, droppable_priority="none")
    s, port = h.open()
    for _ in range(30):
        h.hub.publish("room", "z" * 400, priority="low")
        h.turn()
    assert port.closes and port.closes[0][0] == CloseCode.SLOW_CONSUMER
    assert s.stats.dropped == 0


def test_client_publish_priority_is_validated() -> None:
    h = H()
    s, port = h.open()
    h.hub.receive_text(s, json.dumps({"type": "publish", "channel": "room", "data": 1,
                                      "priority": "control", "id": 3}))
    h.turn()
    [err] = port.drain()
    assert err["code"] == "bad_field" and err["id"] == 3

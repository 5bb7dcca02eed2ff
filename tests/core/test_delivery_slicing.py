"""Time-sliced fan-out and flush (core/outbox.py): big groups over several loop turns.

A fake scheduler collects the hub's callbacks; ``Turns.run`` plays them one loop
turn at a time and tags every write with its turn, so the tests can see what
went out when. ``fanout_slice_seconds=0`` makes every slice as small as it can
be (one step of ``SLICE_STEP`` sessions), which makes the slicing deterministic.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.outbound import Priority
from realtime_lab.core.outbox import SLICE_STEP
from realtime_lab.protocol.frames import parse_frames, text_frame
from realtime_lab.protocol.wire import JSON_WIRE
from realtime_lab.testing import TurnScheduler

_seq = itertools.count()


class TaggedPort:
    """Records each write with the loop turn it happened in and a global sequence."""

    wire = JSON_WIRE

    remote = "127.0.0.1"

    def __init__(self, turns: Turns) -> None:
        self.turns = turns
        self.writes: list[tuple[int, int, bytes]] = []  # (turn, seq, data)

    def write(self, data: bytes) -> None:
        self.writes.append((self.turns.turn, next(_seq), bytes(data)))

    def buffered_bytes(self) -> int:
        return 0

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        pass  # the tests drain nothing

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        frames, rest = parse_frames(b"".join(w[2] for w in self.writes))
        assert rest == b""
        return [json.loads(f.payload) for f in frames]

    def data(self) -> list[Any]:
        return [m["data"] for m in self.messages() if m["type"] == "message"]


class Turns(TurnScheduler):
    """A hub on a fake event loop: callbacks scheduled during a turn run in the next one."""

    def __init__(self, **opts: Any) -> None:
        super().__init__()
        options = {"presence_channels": None, **opts}
        self.hub = Hub(ServerOptions(**options), schedule=self)

    def open(self, count: int, channel: str = "room") -> list[tuple[Session, TaggedPort]]:
        out = []
        for _ in range(count):
            port = TaggedPort(self)
            session = self.hub.open(port)
            self.hub.receive_text(session, json.dumps({"type": "subscribe", "channel": channel}))
            out.append((session, port))
        self.run()
        for _, port in out:
            port.writes.clear()
        return out


def test_a_small_group_goes_out_in_the_same_turn() -> None:
    t = Turns(fanout_slice_seconds=0)  # even with no time at all: 50 <= fanout_slice_min
    clients = t.open(50)
    t.turn = 0
    for i in range(3):
        t.hub.publish("room", i)
    assert t.run() == 1
    for _, port in clients:
        assert port.data() == [0, 1, 2]
        assert [turn for turn, _, _ in port.writes] == [1]  # one write, coalesced


def test_a_large_group_is_spread_over_turns_and_everyone_gets_everything_in_order() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10)
    clients = t.open(300)
    t.turn = 0
    counts = [t.hub.publish("room", i) for i in range(5)]
    assert counts[0] == 300  # the count includes those still to come
    turns = t.run()
    assert turns >= 300 // SLICE_STEP  # one step per turn with no time budget
    for _, port in clients:
        assert port.data() == [0, 1, 2, 3, 4]
    written = {turn for _, port in clients for turn, _, _ in port.writes}
    assert len(written) > 1
    assert t.hub.stats.deliveries == 5 * 300


def test_publishes_during_a_sliced_fan_out_queue_behind_it() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10)
    big = t.open(200, "room")
    both = big[-1][0]  # the last subscriber of room is also in "side"
    t.hub.receive_text(both, json.dumps({"type": "subscribe", "channel": "side"}))
    side = t.open(3, "side")
    t.run()
    for _, port in [*big, *side]:
        port.writes.clear()
    t.hub.publish("room", "r0")
    t.step()  # one turn: only the first slice of r0 is queued
    t.hub.publish("side", "s0")  # small, but must not overtake r0 for `both`
    t.hub.publish("room", "r1")
    t.run()
    assert big[-1][1].data() == ["r0", "s0", "r1"]
    for _, port in big[:-1]:
        assert port.data() == ["r0", "r1"]
    for _, port in side:
        assert port.data() == ["s0"]


def test_a_control_message_goes_first_during_a_sliced_flush() -> None:
    # Two groups of 100 (each fan-out done at once), 200 dirty sessions: a sliced flush.
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=100)
    a = t.open(100, "a")
    b = t.open(100, "b")
    t.turn = 0
    t.hub.publish("a", "x")
    t.hub.publish("b", "y")
    t.step()
    last_session, last_port = b[-1]
    assert last_port.writes == []  # still waiting for its slice
    assert t.hub.send(last_session, {"type": "notice", "text": "now"}, Priority.CONTROL)
    t.run()
    first_turn_2 = min((seq, port) for _, port in [*a, *b]
                       for turn, seq, _ in port.writes if turn == 2)
    assert first_turn_2[1] is last_port  # served before the rest of the backlog
    assert [m["type"] for m in last_port.messages()] == ["message", "notice"]
    assert all(port.data() == ["x"] for _, port in a)


def test_exclude_in_a_sliced_fan_out_at_high_priority() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=5)
    clients = t.open(40)
    sender = clients[7][0]
    channel = t.hub.channels["room"]
    frame = text_frame('{"type":"message","channel":"room","data":"z"}')
    subscribers = list(channel.subscribers.values())
    assert t.hub.services.outbox.fan_out(subscribers, frame, Priority.HIGH, None,
                                         skip=(sender.id,)) == 39
    t.run()
    for session, port in clients:
        assert port.data() == ([] if session is sender else ["z"])


def test_run_now_scheduler_delivers_a_huge_group_without_recursing() -> None:
    hub = Hub(ServerOptions(presence_channels=None, fanout_slice_seconds=0, fanout_slice_min=1))
    ports = []
    for _ in range(1500):
        port = TaggedPort(Turns())
        session = hub.open(port)
        hub.receive_text(session, json.dumps({"type": "subscribe", "channel": "room"}))
        ports.append(port)
    assert hub.publish("room", "now") == 1500
    assert all(port.data() == ["now"] for port in ports)


@pytest.mark.parametrize("bad", [{"fanout_slice_seconds": -1}, {"fanout_slice_min": -1},
                                 {"fanout_slice_min": 1.5}, {"fanout_slice_seconds": "1"},
                                 {"fanout_flush_delay": -0.1}, {"fanout_flush_delay": True}])
def test_slice_options_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fanout_"):
        ServerOptions(**bad)


# ---------------------------------------------------------------- fanout_flush_delay


def test_writes_wait_for_the_sliced_fan_outs_and_carry_every_frame() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10, fanout_flush_delay=60)
    clients = t.open(100)
    t.turn = 0
    for i in range(5):
        t.hub.publish("room", i)
    t.run()
    for _, port in clients:
        assert port.data() == [0, 1, 2, 3, 4]
        assert len(port.writes) == 1  # every frame of the burst in one write


def test_without_a_flush_delay_writes_follow_each_slice() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10, fanout_flush_delay=0)
    clients = t.open(100)
    for i in range(5):
        t.hub.publish("room", i)
    t.run()
    assert all(port.data() == [0, 1, 2, 3, 4] for _, port in clients)
    assert max(len(port.writes) for _, port in clients) > 1


def test_a_put_off_flush_goes_out_once_it_has_waited_the_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("realtime_lab.core.outbox.perf_counter", lambda: now[0])
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10, fanout_flush_delay=0.05)
    clients = t.open(100)
    for i in range(5):
        t.hub.publish("room", i)
    for _ in range(4):  # the clock stands still: fan-out slices only, writes put off
        t.step()
    assert all(port.writes == [] for _, port in clients)
    now[0] = 0.06  # the put-off flush has now waited longer than the delay
    for _ in range(3):
        t.step()
    assert t.hub.services.outbox.pending_fan_outs  # fan-outs still queued ...
    assert any(port.writes for _, port in clients)  # ... and writes went out anyway
    t.run()
    for _, port in clients:
        assert port.data() == [0, 1, 2, 3, 4]


def test_a_control_message_is_not_held_behind_a_sliced_fan_out() -> None:
    t = Turns(fanout_slice_seconds=0, fanout_slice_min=10, fanout_flush_delay=60)
    clients = t.open(100)
    t.turn = 0
    for i in range(5):
        t.hub.publish("room", i)
    t.step()  # the first slice is queued, the writes are put off
    session, port = clients[-1]
    assert port.writes == []
    assert t.hub.send(session, {"type": "notice", "text": "now"}, Priority.CONTROL)
    t.step()
    assert port.writes and port.writes[0][0] == 2  # written in the next turn
    t.run()
    messages = port.messages()
    assert [m.get("data") for m in messages if m["type"] == "message"] == [0, 1, 2, 3, 4]
    assert any(m["type"] == "notice" for m in messages)


def test_the_large_broadcasts_of_one_turn_share_one_time_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each fan-out alone fits in its slice; a publisher's burst read in one turn must
    # not get a fresh slice per message (that stalled the loop for 165 ms at 5000 x 200).
    now = [0.0]
    monkeypatch.setattr("realtime_lab.core.outbox.perf_counter", lambda: now[0])
    t = Turns(fanout_slice_seconds=0.005, fanout_slice_min=10)
    clients = t.open(40)
    t.hub.publish("room", 0)  # done at once: the turn's budget is not spent
    assert all(len(session.pending.frames) == 1 for session, _ in clients)
    now[0] = 0.01  # the turn's 5 ms are used up
    t.hub.publish("room", 1)
    assert all(len(session.pending.frames) == 1 for session, _ in clients)  # waits a turn
    t.run()
    for _, port in clients:
        assert port.data() == [0, 1]

"""Issue 13, point 1 (the second half): a fan-out job that raises never wedges the queue.

Before, a job that raised stayed at the head of the sliced fan-out queue and every later
broadcast of the server, on every channel, waited behind it forever. Now it is dropped,
logged once, and the jobs behind it run. The failures are injected (a bug in the
server, since the data model keeps every value encodable), on a hub with fake ports and
a fake event loop so that the slices are deterministic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.protocol.wire import MSGPACK, wire_format
from realtime_lab.testing import ManualClock, RecordingPort, TurnScheduler


class Lab:
    """``room``: 100 JSON subscribers with a msgpack one at ``poisoned_at``; ``other``: a canary."""

    def __init__(self, poisoned_at: int = 50, **options: Any) -> None:
        self.loop = TurnScheduler()
        opts = {"presence_channels": None, "fanout_slice_min": 10, "fanout_slice_seconds": 0,
                **options}
        self.hub = Hub(ServerOptions(**opts), clock=ManualClock(), schedule=self.loop)
        self.room = [self.open("room", binary=i == poisoned_at) for i in range(101)]
        self.poisoned = self.room[poisoned_at]
        self.canary = self.open("other")
        self.publisher = self.open(None)
        self.loop.run()
        for s in self.everyone():
            s.port.writes.clear()  # type: ignore[attr-defined]

    def open(self, channel: str | None, *, binary: bool = False) -> Session:
        session = self.hub.open(RecordingPort(wire=wire_format(MSGPACK if binary else "json")))
        if channel is not None:
            self.hub.subscribe(session, channel)
        return session  # type: ignore[no-any-return]

    def everyone(self) -> list[Session]:
        return [*self.room, self.canary, self.publisher]

    def publish(self, channel: str, data: Any, rid: int | None = None) -> None:
        msg: dict[str, Any] = {"type": "publish", "channel": channel, "data": data}
        if rid is not None:
            msg["id"] = rid
        self.hub.receive_text(self.publisher, json.dumps(msg))

    def poison_queue_of(self, victim: Session) -> None:
        """Make queueing a frame that holds ``poison`` for ``victim`` raise (a server bug)."""
        outbox = self.hub.services.outbox
        enqueue = outbox.enqueue

        def failing(session: Session, frame: bytes, *args: Any) -> bool:
            if session is victim and b"poison" in frame:
                raise RuntimeError("bug while queueing a frame")
            return enqueue(session, frame, *args)

        outbox.enqueue = failing  # type: ignore[method-assign]

    @staticmethod
    def data(session: Session) -> list[Any]:
        messages = session.port.messages()  # type: ignore[attr-defined]
        return [m["data"] for m in messages if m["type"] == "message"]


def test_a_job_that_raises_is_dropped_and_later_broadcasts_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    lab = Lab()
    lab.poison_queue_of(lab.poisoned)
    with caplog.at_level(logging.ERROR, logger="realtime_lab.core"):
        lab.publish("room", "poison")
        lab.publish("room", "after-1")
        lab.publish("other", "canary-1")
        lab.publish("room", "after-2")
        newcomer = lab.open("other")
        lab.publish("other", "canary-2")
        turns = lab.loop.run()
    assert turns > 5  # the fan-outs really were sliced over many loop turns
    assert lab.data(lab.canary) == ["canary-1", "canary-2"]
    assert lab.data(newcomer) == ["canary-2"]
    for i, session in enumerate(lab.room):
        got = lab.data(session)
        expected = ["after-1", "after-2"]
        assert got in (expected, ["poison", *expected]), (i, got)
        assert (got[0] == "poison") == (i < 50), (i, got)  # dropped where it failed
    assert lab.hub.stats.fanouts_failed == 1
    [record] = [r for r in caplog.records if "was dropped" in r.getMessage()]
    assert record.exc_info is not None and "101 subscribers failed after 50" in record.getMessage()


def test_the_publisher_is_told_how_many_really_got_it() -> None:
    """A job that fails in its first slice (run in the publish call) reports the true count."""
    lab = Lab(poisoned_at=5)
    lab.poison_queue_of(lab.poisoned)
    lab.publish("room", "poison", rid=1)
    lab.loop.run()
    replies = [m for m in lab.publisher.port.messages() if m.get("id") == 1]  # type: ignore[attr-defined]
    got = sum(1 for s in lab.room if lab.data(s) == ["poison"])
    assert got == 5 and replies == [{"type": "published", "channel": "room",
                                     "recipients": 5, "id": 1}]


def test_a_broadcast_one_codec_cannot_encode_reaches_nobody(
        caplog: pytest.LogCaptureFixture) -> None:
    """All or nothing: the broadcast is encoded for every codec of its targets before it is
    queued for anyone (here an outbound middleware puts in what msgpack cannot carry)."""
    def corrupt(ctx: Any, call_next: Any) -> Any:
        if ctx.message["data"] == "corrupt-me":
            ctx.message["data"] = 2**64  # a bug in a middleware: JSON can carry it, msgpack not
        return call_next(ctx)

    class Corrupt:
        outbound = staticmethod(corrupt)

    lab = Lab()
    lab.hub.set_middleware([Corrupt()])
    with caplog.at_level(logging.ERROR, logger="realtime_lab.core"):
        lab.publish("room", "corrupt-me", rid=2)
        lab.publish("room", "fine")
        lab.loop.run()
    for session in lab.room:
        assert lab.data(session) == ["fine"]
    replies = [m for m in lab.publisher.port.messages() if m.get("id") == 2]  # type: ignore[attr-defined]
    assert replies == [{"type": "published", "channel": "room", "recipients": 0, "id": 2}]
    assert lab.hub.stats.fanouts_failed == 1
    assert sum("could not be encoded" in r.getMessage() for r in caplog.records) == 1


def test_failures_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    lab = Lab()
    lab.poison_queue_of(lab.poisoned)
    with caplog.at_level(logging.ERROR, logger="realtime_lab.core"):
        for _ in range(50):
            lab.publish("room", "poison")
        lab.loop.run()
        assert lab.hub.stats.fanouts_failed == 50
        assert sum("was dropped" in r.getMessage() for r in caplog.records) == 1
        lab.hub.clock.advance(60.0)  # type: ignore[attr-defined]
        lab.publish("room", "poison")
        lab.loop.run()
    last = [r.getMessage() for r in caplog.records if "was dropped" in r.getMessage()][-1]
    assert "(49 more like this in the last 60 s not logged)" in last

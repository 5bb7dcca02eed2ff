"""The event bus: filters, handler priorities, bounded streams, and what the hub emits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core import events as ev
from realtime_lab.core.events import STOP, EventBus, EventFilter, make_filter
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.testing import ManualClock, RecordingPort


def make_hub(**opts: Any) -> tuple[Hub, list[Callable[[], None]]]:
    pending: list[Callable[[], None]] = []
    hub = Hub(ServerOptions(**opts), clock=ManualClock(100.0), schedule=pending.append)
    return hub, pending


def send(hub: Hub, session: Session, msg: dict[str, Any]) -> None:
    hub.receive_text(session, json.dumps(msg))


def record(hub: Hub, spec: Any = None, **criteria: Any) -> list[ev.Event]:
    seen: list[ev.Event] = []
    hub.bus.subscribe(seen.append, spec, **criteria)
    return seen


# ---------------------------------------------------------------------------- filters


def e(cls: type[ev.Event] = ev.ChannelSubscribed, **kw: Any) -> ev.Event:
    return cls(at=1.0, **kw)


@pytest.mark.parametrize(("flt", "event", "match"), [
    (EventFilter(types="channel.*"), e(channel="a"), True),
    (EventFilter(types="presence.*"), e(channel="a"), False),
    (EventFilter(types=("presence.*", "channel.subscribed")), e(channel="a"), True),
    (EventFilter(channels="room-*"), e(channel="room-1"), True),
    (EventFilter(channels="room-*"), e(channel="lobby"), False),
    (EventFilter(channels="room-*"), e(ev.Connected), False),  # no channel never matches
    (EventFilter(users="ada"), e(user="ada"), True),
    (EventFilter(users=frozenset({"ada", "bob"})), e(user="bob"), True),
    (EventFilter(users="ada"), e(user="carl"), False),
    (EventFilter(where=lambda x: x.channel == "a"), e(channel="a"), True),
    (EventFilter(where=lambda x: x.channel == "a"), e(channel="b"), False),
    (EventFilter(types="channel.*", users="ada"), e(user="bob"), False),
])
def test_filter_criteria(flt: EventFilter, event: ev.Event, match: bool) -> None:
    assert flt.matches(event) is match


def test_make_filter_specs() -> None:
    assert make_filter() is None
    assert make_filter("presence.*").matches(e(ev.PresenceJoin))  # type: ignore[union-attr]
    pred = make_filter(lambda x: x.user == "ada", types="channel.*")
    assert pred is not None and pred.matches(e(user="ada"))
    assert not pred.matches(e(ev.PresenceJoin, user="ada"))
    base = EventFilter(types="channel.*")
    assert make_filter(base) is base
    both = make_filter(base, user="ada")
    assert both is not None and both.matches(e(user="ada")) and not both.matches(e(user="b"))


def test_every_event_type_is_registered_and_flat() -> None:
    assert set(ev.EVENT_TYPES) >= {
        "connection.opened", "connection.closed", "connection.refused", "channel.subscribed",
        "channel.unsubscribed", "channel.occupied", "channel.vacated", "message.published",
        "message.delivered", "message.dropped", "presence.join", "presence.leave",
        "presence.update", "presence.timeout", "heartbeat.timeout", "limit.exceeded", "error"}
    row = ev.MessageDelivered(at=2.0, channel="a", count=3).as_dict()
    assert row["type"] == "message.delivered" and row["count"] == 3 and row["channel"] == "a"
    with pytest.raises(AttributeError):
        ev.MessageDelivered(at=2.0).count = 4  # type: ignore[misc]  # frozen


# ---------------------------------------------------------------------------- bus


def test_handlers_run_in_priority_order_then_age_and_stop_halts() -> None:
    bus = EventBus()
    order: list[str] = []
    bus.subscribe(lambda _: order.append("low"), priority=-5)
    bus.subscribe(lambda _: order.append("mid1"))
    bus.subscribe(lambda _: order.append("high"), priority=10)
    bus.subscribe(lambda _: order.append("mid2"))
    bus.emit(e())
    assert order == ["high", "mid1", "mid2", "low"]
    order.clear()
    bus.subscribe(lambda _: (order.append("stopper"), STOP)[1], priority=5)
    bus.emit(e())
    assert order == ["high", "stopper"]


def test_failing_handler_is_counted_and_others_still_run() -> None:
    bus = EventBus()
    seen: list[ev.Event] = []
    bus.subscribe(lambda _: 1 / 0, priority=1)
    bus.subscribe(seen.append)
    bus.emit(e())
    assert len(seen) == 1 and bus.handler_errors == 1


def test_active_flag_follows_subscriptions() -> None:
    bus = EventBus()
    assert not bus.active
    sub = bus.subscribe(lambda _: None)
    assert bus.active
    sub.cancel()
    sub.cancel()  # idempotent
    assert not bus.active


async def test_async_handler_runs_as_a_task() -> None:
    bus = EventBus()
    got = asyncio.Event()

    async def handler(_: ev.Event) -> None:
        got.set()

    bus.subscribe(handler)
    bus.emit(e())
    await asyncio.wait_for(got.wait(), 1)


# ---------------------------------------------------------------------------- streams


async def test_stream_overflow_drops_oldest_and_counts() -> None:
    bus = EventBus()
    stream = bus.stream(maxsize=3)
    for i in range(5):
        bus.emit(ev.MessageDelivered(at=float(i), count=i))
    assert stream.dropped == 2 and stream.received == 5 and len(stream) == 3
    assert [x.count for x in stream.drain()] == [2, 3, 4]  # type: ignore[attr-defined]


async def test_stream_get_wait_for_and_close() -> None:
    bus = EventBus()
    async with bus.stream("channel.*") as stream:
        asyncio.get_running_loop().call_soon(bus.emit, e(ev.PresenceJoin))
        asyncio.get_running_loop().call_soon(bus.emit, e(channel="x"))
        got = await stream.get(timeout=1)
        assert got.type == "channel.subscribed"  # the presence event was filtered out
        with pytest.raises(TimeoutError):
            await stream.get(timeout=0.01)
        bus.emit(e(channel="a"))
        bus.emit(e(channel="b"))
        assert (await stream.wait_for(channel="b", timeout=1)).channel == "b"
    assert stream.closed and not bus.active
    with pytest.raises(EOFError):
        await stream.get(timeout=1)


async def test_stream_async_for_ends_when_closed() -> None:
    bus = EventBus()
    stream = bus.stream()
    bus.emit(e(channel="a"))
    seen = []
    async for event in stream:
        seen.append(event.channel)
        stream.close()
    assert seen == ["a"]


# ---------------------------------------------------------------------------- hub emits


def test_no_event_is_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    hub, flush = make_hub()
    built: list[str] = []
    original = ev.Event.__init__

    def spy(self: ev.Event, *a: Any, **kw: Any) -> None:
        built.append(type(self).__name__)
        original(self, *a, **kw)

    monkeypatch.setattr(ev.Event, "__init__", spy)
    s = hub.open(RecordingPort("10.0.0.1"))
    send(hub, s, {"type": "subscribe", "channel": "room"})
    hub.publish("room", "x")
    hub.closed(s)
    assert built == [] and hub.bus.emitted == 0


def test_lifecycle_channel_presence_and_delivery_events() -> None:
    hub, _ = make_hub()
    seen = record(hub)
    a = hub.open(RecordingPort("10.0.0.1"), user="ada")
    b = hub.open(RecordingPort("10.0.0.1"), user="bob")
    send(hub, a, {"type": "subscribe", "channel": "room"})
    send(hub, b, {"type": "subscribe", "channel": "room"})
    hub.publish("room", {"hello": 1})
    send(hub, b, {"type": "unsubscribe", "channel": "room"})
    hub.closed(a, 1000, "bye")
    types = [x.type for x in seen]
    assert types == [
        "connection.opened", "connection.opened",
        "channel.occupied", "channel.subscribed", "presence.join",
        "channel.subscribed", "presence.join",
        "message.published", "message.delivered",
        "channel.unsubscribed", "presence.leave",
        "channel.unsubscribed", "presence.leave", "channel.vacated",
        "connection.closed",
    ]
    delivered = next(x for x in seen if isinstance(x, ev.MessageDelivered))
    assert delivered.count == 2 and delivered.channel == "room" and delivered.size > 0
    closed = seen[-1]
    assert isinstance(closed, ev.Disconnected) and closed.code == 1000 and closed.user == "ada"


def test_one_delivered_event_per_broadcast_whatever_the_fan_out() -> None:
    hub, _ = make_hub()
    seen = record(hub, "message.*")
    for _ in range(50):
        s = hub.open(RecordingPort("10.0.0.1"))
        send(hub, s, {"type": "subscribe", "channel": "room"})
    hub.publish("room", 1)
    assert [(x.type, getattr(x, "count", None)) for x in seen] == [
        ("message.published", None), ("message.delivered", 50)]


def test_errors_and_limits_are_events() -> None:
    hub, _ = make_hub(max_subscriptions=1)
    seen = record(hub, ("error", "limit.*"))
    s = hub.open(RecordingPort("10.0.0.1"), user="ada")
    send(hub, s, {"type": "subscribe", "channel": "a"})
    send(hub, s, {"type": "subscribe", "channel": "b", "id": 7})
    assert [(x.type, getattr(x, "code", None)) for x in seen] == [
        ("error", "too_many_subscriptions"), ("limit.exceeded", "too_many_subscriptions")]
    assert seen[1].limit == "max_subscriptions"  # type: ignore[attr-defined]


def test_heartbeat_timeout_emits_and_presence_times_out() -> None:
    hub, _ = make_hub(heartbeat_interval=10, heartbeat_timeout=5)
    seen = record(hub, ("heartbeat.*", "presence.*", "connection.closed"))
    s = hub.open(RecordingPort("10.0.0.1"), user="ada")
    other = hub.open(RecordingPort("10.0.0.1"), user="bob")
    send(hub, s, {"type": "subscribe", "channel": "room"})
    send(hub, other, {"type": "subscribe", "channel": "room"})
    clock = hub.clock
    assert isinstance(clock, ManualClock)
    clock.now += 10
    hub.heartbeat_tick()
    hub.pong(other)
    clock.now += 5
    hub.heartbeat_tick()
    assert s.close_code == CloseCode.HEARTBEAT_TIMEOUT
    hub.closed(s)
    assert [x.type for x in seen] == ["presence.join", "presence.join", "heartbeat.timeout",
                                      "presence.timeout", "connection.closed"]
    assert seen[-1].code == CloseCode.HEARTBEAT_TIMEOUT  # type: ignore[attr-defined]


def test_user_filter_on_the_hub() -> None:
    hub, _ = make_hub()
    seen = record(hub, user="bob")
    a = hub.open(RecordingPort("10.0.0.1"), user="ada")
    b = hub.open(RecordingPort("10.0.0.1"), user="bob")
    send(hub, a, {"type": "subscribe", "channel": "room"})
    send(hub, b, {"type": "subscribe", "channel": "room"})
    assert {x.user for x in seen} == {"bob"} and len(seen) == 3


def test_wants_follows_type_filters_and_skips_unwanted_hot_path_events() -> None:
    bus = EventBus()
    assert not bus.wants("message.delivered")
    sub = bus.subscribe(lambda _: None, "limit.*")
    assert bus.wants("limit.exceeded") and not bus.wants("message.delivered")
    other = bus.subscribe(lambda _: None, where=lambda e: True)  # no type filter: everything
    assert bus.wants("message.delivered")
    other.cancel()
    assert not bus.wants("message.delivered")
    sub.cancel()
    hub, _ = make_hub()
    seen = record(hub, "message.published")
    s = hub.open(RecordingPort("10.0.0.1"))
    send(hub, s, {"type": "subscribe", "channel": "room"})
    hub.publish("room", 1)
    assert [x.type for x in seen] == ["message.published"]

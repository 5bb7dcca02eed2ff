"""Middleware without sockets: the chain, RateLimit buckets, Logging lines, Compression policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.middleware import (
    Compression,
    CompressionPolicy,
    Inbound,
    Logging,
    Middleware,
    Outbound,
    Rate,
    RateLimit,
)
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.testing import ManualClock, RecordingPort


def make(*middleware: Any) -> tuple[Hub, ManualClock]:
    clock = ManualClock(50.0)
    return Hub(ServerOptions(), clock=clock, middleware=middleware), clock


def open_(hub: Hub, remote: str = "10.0.0.1") -> tuple[Session, RecordingPort]:
    port = RecordingPort(remote)
    s = hub.open(port)
    port.take()
    return s, port


def send(hub: Hub, s: Session, msg: dict[str, Any]) -> None:
    hub.receive_text(s, json.dumps(msg))


# ---------------------------------------------------------------------------- chain


def test_chain_order_modify_and_drop() -> None:
    order: list[str] = []

    class Tag(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
            order.append(self.name)
            if isinstance(ctx.message, dict) and ctx.message.get("data") == "drop":
                return None  # not calling next drops the message
            return call_next(ctx)

    def upper(ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:  # a plain function
        if ctx.type == "publish":
            ctx.message = {**ctx.message, "data": str(ctx.message["data"]).upper()}
        return call_next(ctx)

    class Stamp(Middleware):
        def outbound(self, ctx: Outbound, call_next: Callable[[Any], Any]) -> int:
            ctx.message["stamp"] = ctx.subscribers
            return call_next(ctx)

    hub, _ = make(Tag("outer"), upper, Tag("inner"), Stamp())
    s, port = open_(hub)
    send(hub, s, {"type": "subscribe", "channel": "room"})
    send(hub, s, {"type": "publish", "channel": "room", "data": "hi"})
    send(hub, s, {"type": "publish", "channel": "room", "data": "drop"})
    msgs = [m for m in port.take() if m["type"] == "message"]
    assert msgs == [{"type": "message", "channel": "room", "data": "HI", "from": s.user,
                     "stamp": 1}]
    assert order == ["outer", "inner"] * 2 + ["outer"]


def test_passthrough_methods_are_not_in_the_chain() -> None:
    hub, _ = make(Middleware(), RateLimit())
    assert hub.services.publisher.chain is None and hub.services.commands.chain is not None
    hub.set_middleware([])
    assert hub.services.commands.chain is None and hub.services.publisher.chain is None


def test_middleware_crash_is_an_internal_error() -> None:
    hub, _ = make(lambda ctx, nxt: 1 / 0)
    s, port = open_(hub)
    send(hub, s, {"type": "ping", "id": 5})
    assert port.take() == [{"type": "error", "code": "internal_error", "id": 5,
                            "message": "the server failed on this message"}]
    assert s.is_open


# ---------------------------------------------------------------------------- rate limit


def test_rate_of() -> None:
    assert Rate.of(10) == Rate(10.0, 10) and Rate.of((2, 5)) == Rate(2.0, 5)
    assert Rate.of(None) is None
    with pytest.raises(ValueError):
        Rate(0, 1)


def test_per_connection_bucket_refills_at_the_rate() -> None:
    rl = RateLimit(per_connection=(10, 5), per_ip=None, max_violations=None)
    hub, clock = make(rl)
    s, port = open_(hub)
    for i in range(8):
        send(hub, s, {"type": "ping", "id": i})
    replies = port.take()
    assert [m["type"] for m in replies] == ["pong"] * 5 + ["error"] * 3
    assert replies[5]["code"] == "rate_limited" and replies[5]["id"] == 5
    clock.now += 0.35  # 3.5 tokens back
    for i in range(4):
        send(hub, s, {"type": "ping", "id": i})
    assert [m["type"] for m in port.take()] == ["pong"] * 3 + ["error"]
    assert rl.allowed == 8 and rl.refused == 4


def test_per_ip_bucket_is_shared_and_other_ips_are_untouched() -> None:
    rl = RateLimit(per_connection=None, per_ip=(1, 3), max_violations=None)
    hub, _ = make(rl)
    a, pa = open_(hub, "1.1.1.1")
    b, pb = open_(hub, "1.1.1.1")
    c, pc = open_(hub, "2.2.2.2")
    for s in (a, b, a, b):
        send(hub, s, {"type": "ping"})
    for _ in range(3):
        send(hub, c, {"type": "ping"})
    assert [m["type"] for m in pa.take() + pb.take()].count("error") == 1
    assert [m["type"] for m in pc.take()] == ["pong"] * 3


def test_per_type_limit() -> None:
    rl = RateLimit(per_connection=None, per_ip=None, per_type={"publish": (1, 2)},
                   max_violations=None)
    hub, _ = make(rl)
    s, port = open_(hub)
    for _ in range(3):
        send(hub, s, {"type": "publish", "channel": "x", "data": 1, "id": 1})
    for _ in range(3):
        send(hub, s, {"type": "ping"})
    assert [m.get("code", m["type"]) for m in port.take()] == [
        "published", "published", "rate_limited", "pong", "pong", "pong"]


def test_repeated_abuse_closes_with_4102_and_state_is_forgotten() -> None:
    rl = RateLimit(per_connection=(1, 1), per_ip=None, max_violations=3, violation_window=5)
    hub, _ = make(rl)
    seen: list[Any] = []
    hub.bus.subscribe(seen.append, "limit.exceeded")
    s, port = open_(hub)
    for _ in range(4):
        send(hub, s, {"type": "ping"})
    codes = [m.get("code") for m in port.take()]
    assert codes == [None, "rate_limited", "rate_limited", "rate_limit_abuse"]
    assert port.closes == [(CloseCode.RATE_LIMITED, "rate_limit_abuse")]
    assert [(x.limit, x.code) for x in seen] == [("rate_limit", "rate_limited")] * 2 + [
        ("rate_limit", 4102)]
    hub.closed(s)
    assert rl._conn == {} and rl._violations == {}


# ---------------------------------------------------------------------------- logging


def test_logging_lines_are_structured_redacted_and_sampled(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    mw = Logging(sample=0.5)
    hub, _ = make(mw)
    s, port = open_(hub)
    caplog.set_level(logging.INFO, "realtime_lab.middleware")
    send(hub, s, {"type": "subscribe", "channel": "room"})
    for i in range(4):
        send(hub, s, {"type": "publish", "channel": "room", "data": {"secret": i}})
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert len(lines) == 4 and mw.lines == 4, "half of 9 (subscribe + 4 in + 4 out)"
    assert all("secret" not in json.dumps(line) for line in lines)
    inbound = [x for x in lines if x["dir"] == "in" and x["type"] == "publish"]
    assert inbound and inbound[0]["data"] == "<redacted>" and inbound[0]["conn"] == s.id
    assert inbound[0]["bytes"] > 0 and inbound[0]["channel"] == "room"


def test_logging_outbound_line(caplog: pytest.LogCaptureFixture) -> None:
    hub, _ = make(Logging(inbound_log=False))
    s, _ = open_(hub)
    caplog.set_level(logging.INFO, "realtime_lab.middleware")
    send(hub, s, {"type": "subscribe", "channel": "room"})
    hub.publish("room", {"secret": 1})
    [out] = [json.loads(r.getMessage()) for r in caplog.records]
    assert out == {"dir": "out", "user": None, "type": "message", "channel": "room",
                   "bytes": out["bytes"], "recipients": 1, "data": "<redacted>"}
    assert out["bytes"] > 20


def test_logging_payloads_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    hub, _ = make(Logging(payloads=True, outbound_log=False),
                  RateLimit(per_connection=(1, 1), per_ip=None, max_violations=None))
    s, _ = open_(hub)
    caplog.set_level(logging.INFO, "realtime_lab.middleware")
    send(hub, s, {"type": "publish", "channel": "room", "data": "visible"})
    send(hub, s, {"type": "publish", "channel": "room", "data": "visible"})
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [x.get("error") for x in lines] == [None, "rate_limited"]
    assert lines[0]["data"] == "visible" and all(x["dir"] == "in" for x in lines)


def test_logging_costs_nothing_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    mw = Logging(level=logging.DEBUG)
    hub, _ = make(mw)
    s, _ = open_(hub)
    caplog.set_level(logging.INFO, "realtime_lab.middleware")
    send(hub, s, {"type": "ping"})
    assert mw.lines == 0


# ---------------------------------------------------------------------------- compression


def test_compression_middleware_uses_the_one_policy_class() -> None:
    from realtime_lab.protocol.deflate import CompressionPolicy as ProtocolPolicy

    assert CompressionPolicy is ProtocolPolicy
    default = Compression()
    assert default.policy == CompressionPolicy() and default.policy.enabled
    tuned = Compression(level=1, threshold=100, enabled=False)
    assert (tuned.policy.level, tuned.policy.threshold, tuned.policy.enabled) == (1, 100, False)
    for bad in ({"level": 10}, {"server_max_window_bits": 8}, {"mem_level": 0},
                {"threshold": -1}):
        with pytest.raises(ValueError):
            CompressionPolicy(**bad)


def test_compression_marks_broadcasts() -> None:
    marks: list[bool | None] = []

    class Spy(Middleware):
        def outbound(self, ctx: Outbound, call_next: Callable[[Any], Any]) -> int:
            marks.append(ctx.compress)
            return call_next(ctx)

    hub, _ = make(Compression(enabled=True), Spy())
    s, _ = open_(hub)
    send(hub, s, {"type": "subscribe", "channel": "room"})
    hub.publish("room", "x")
    assert marks == [True]


async def test_async_inbound_middleware_is_awaited_in_order() -> None:
    import asyncio

    from realtime_lab.middleware import maybe_await

    seen: list[int] = []

    async def slow_check(ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        await asyncio.sleep(0.001 * (3 - len(seen)))  # later messages finish sooner
        seen.append(ctx.message.get("id"))
        return await maybe_await(call_next(ctx))

    hub, _ = make(slow_check)
    s, port = open_(hub)
    for i in range(3):  # the transport awaits each message before the next
        result = hub.receive_text(s, json.dumps({"type": "ping", "id": i}))
        assert result is not None
        await result
    assert seen == [0, 1, 2]
    assert [m["id"] for m in port.take()] == [0, 1, 2]

"""RateLimit over real sockets: a flood is refused at the configured rate, others get through."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from tornado.websocket import WebSocketClosedError, websocket_connect

import realtime_lab
from realtime_lab.middleware import RateLimit
from realtime_lab.protocol.close_codes import CloseCode

RATE = 20.0  # low enough that a client starved of CPU still floods well over it
BURST = 10
FLOOD_SECONDS = 3.0
FLOOD_RATE = 3 * RATE  # paced, so the measure is the limiter's, not the CPU's


def token_bucket_admits(arrivals: list[float], rate: float, burst: int) -> int:
    """How many messages arriving at these times a token bucket of ``rate`` per second
    and ``burst`` admits: the documented RateLimit semantics, whatever the pauses."""
    tokens, last, admitted = float(burst), arrivals[0], 0
    for t in arrivals:
        tokens = min(float(burst), tokens + (t - last) * rate)
        last = t
        if tokens >= 1.0:
            tokens -= 1.0
            admitted += 1
    return admitted


async def flood(url: str, seconds: float, rate: float | None = None
                ) -> tuple[int, int, float, int | None]:
    """Send pings (as fast as possible, or at ``rate`` per second); return (pongs,
    refusals, span, close code)."""
    ws = await websocket_connect(url)
    assert json.loads(await ws.read_message())["type"] == "welcome"
    counts = {"pong": 0, "error": 0}
    done = asyncio.Event()
    sent = 0

    async def reader() -> None:
        while True:
            text = await ws.read_message()
            if text is None:
                break
            msg = json.loads(text)
            if msg["type"] in counts:
                counts[msg["type"]] += 1
                assert msg["type"] == "pong" or msg["code"] in ("rate_limited",
                                                                "rate_limit_abuse")

    task = asyncio.create_task(reader())
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < seconds and ws.protocol is not None:
        try:
            await ws.write_message(json.dumps({"type": "ping", "id": sent}))
        except WebSocketClosedError:
            break  # closed by the server (abuse)
        sent += 1
        if rate is not None:
            ahead = start + sent / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the flood, not waiting for the server
        elif sent % 50 == 0:
            await asyncio.sleep(0)  # let the reader and the server run
    span = loop.time() - start
    done.set()
    deadline = loop.time() + 10
    while not task.done() and counts["pong"] + counts["error"] < sent:
        assert loop.time() < deadline, "replies missing"
        await asyncio.sleep(0.01)  # poll the reader's count, bounded by the deadline
    ws.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    return counts["pong"], counts["error"], span, ws.close_code


async def test_flood_is_refused_at_the_configured_rate_and_others_get_through() -> None:
    limiter = RateLimit(per_connection=(RATE, BURST), per_ip=None, max_violations=None)
    arrivals: dict[str, list[float]] = {}

    def clock_in(ctx: Any, call_next: Any) -> Any:  # when the server saw each message
        arrivals.setdefault(ctx.session.user, []).append(ctx.now)
        return call_next(ctx)

    server = await realtime_lab.serve(port=0, middleware=[clock_in, limiter])
    try:
        healthy = await realtime_lab.connect(server.url, user="healthy")
        await healthy.subscribe("calm")

        async def polite() -> int:
            ok = 0
            for i in range(40):  # 10 messages per second: under its own limit
                reply = await healthy.publish("calm", i, ack=True)
                assert reply is not None and reply["type"] == "published"
                ok += 1
                await asyncio.sleep(0.1)  # pacing the polite client
            return ok

        polite_task = asyncio.create_task(polite())
        pongs, refused, _, _ = await flood(server.url, FLOOD_SECONDS, FLOOD_RATE)
        assert await polite_task == 40
        got = [(await healthy.recv_message("calm", timeout=5))["data"] for _ in range(40)]
        assert got == list(range(40)), "every message of the other client got through"
        [flood_times] = [t for user, t in arrivals.items() if user != "healthy"]
        span = flood_times[-1] - flood_times[0]  # on the server's clock
        assert span > FLOOD_SECONDS * 0.9
        assert pongs + refused == len(flood_times)
        assert refused > 0, "the flood went over the limit"
        # (pongs - BURST) / span is the rate only while the flood outpaces the limit all
        # along; on a busy machine the client pauses and the bucket refills to BURST and
        # stops. What holds on any machine: never more than the limit allows, and
        # exactly what a token bucket admits for the times the server saw.
        measured = (pongs - BURST) / span
        assert pongs <= BURST + RATE * span, f"accepted {measured:.1f}/s vs {RATE}/s"
        assert pongs == token_bucket_admits(flood_times, RATE, BURST), \
            f"accepted {measured:.1f}/s vs {RATE}/s, {refused} refused"
        await healthy.close()
    finally:
        await server.stop()


async def test_repeated_abuse_closes_with_4102_and_others_stay() -> None:
    # a burst of 5 that does not refill during the flood (one token per 100 s): the
    # counts below hold however slowly a busy machine sends the 25 messages
    limiter = RateLimit(per_connection=(0.01, 5), per_ip=None, max_violations=20,
                        violation_window=100)
    server = await realtime_lab.serve(port=0, middleware=[limiter])
    events = server.events("limit.exceeded")
    try:
        healthy = await realtime_lab.connect(server.url)
        await healthy.subscribe("calm")
        pongs, refused, _, code = await flood(server.url, 10.0)  # ends at the close
        assert code == CloseCode.RATE_LIMITED == 4102
        assert refused == 20 and pongs == 5
        last = [e for e in events.drain() if e.code == 4102]
        assert len(last) == 1 and last[0].limit == "rate_limit"
        server.publish("calm", "still here")
        assert (await healthy.recv_message("calm", timeout=5))["data"] == "still here"
        await healthy.close()
    finally:
        events.close()
        await server.stop()


@pytest.mark.parametrize("limit", [3])
async def test_per_ip_limit_is_shared_by_connections_of_one_ip(limit: int) -> None:
    server = await realtime_lab.serve(port=0, middleware=[
        RateLimit(per_connection=None, per_ip=(0.01, limit), max_violations=None)])
    try:
        a = await realtime_lab.connect(server.url)
        b = await realtime_lab.connect(server.url)
        outcomes: list[Any] = []
        for client in (a, b, a, b):
            try:
                outcomes.append((await client.request({"type": "ping"}))["type"])
            except realtime_lab.RequestFailed as err:
                outcomes.append(err.code)
        assert outcomes == ["pong", "pong", "pong", "rate_limited"]
        await a.close()
        await b.close()
    finally:
        await server.stop()

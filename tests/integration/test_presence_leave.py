"""Leaves at once (issue 16 point 4), over real sockets.

When the server decides that a connection ends (heartbeat timeout, idle timeout, a
server-side close, a kick), the other members see its leave at once, with its
reason, not when the socket finally closes: a client that neither answers pings
nor reads keeps its socket open for ``close_timeout`` (2 s) more, waiting for the
answer to the close frame. The later socket close leaves nothing twice.

The dead member is a raw WebSocket client (tests/conftest.py ``raw_ws``) that
subscribes and then stops reading and answering; the watcher is the Python client.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.client import Client
from realtime_lab.core.events import Event
from realtime_lab.protocol.frames import OP_PING, OP_TEXT

INTERVAL = 0.3
TIMEOUT = 0.6
IDLE = 0.5
#: What the issue allows after the server's decision (heartbeat timeout + 0.5 s).
SLACK = 0.5


@pytest.fixture
def options(request: pytest.FixtureRequest) -> ServerOptions:
    idle = IDLE if "idle" in request.function.__name__ else None
    # close_timeout stays at its default (2 s): a leave that waited for the socket
    # to close would come that much too late.
    return ServerOptions(heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT,
                         idle_timeout=idle, presence_details=True)


async def leave_of(client: Client, user: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """When (``time.monotonic()``) the next leave of ``user`` arrived, and its info."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.recv()
            if msg["type"] == "presence_diff" and user in msg["leaves"]:
                return time.monotonic(), msg["leaves"][user]


async def no_leave_of(client: Client, user: str, seconds: float) -> None:
    try:
        _, info = await leave_of(client, user, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"a second leave of {user!r}: {info}")


async def dead_member(server: LabServer, raw_ws: Any, watcher: Client, user: str) -> Any:
    """A raw client of ``user`` subscribed to "room" (the watcher saw it join)."""
    raw = await raw_ws(server.port, path=f"/ws?user={user}")
    await raw.send_json({"type": "subscribe", "channel": "room", "id": 1})
    await raw.read_until(lambda f: f.opcode == OP_TEXT
                         and json.loads(f.payload).get("type") == "subscribed")
    async with asyncio.timeout(5):
        while True:
            msg = await watcher.recv()
            if msg["type"] == "presence_diff" and user in msg["joins"]:
                return raw


async def watching(connect: Any) -> Client:
    watcher: Client = await connect(user="watcher")
    await watcher.subscribe("room")
    return watcher


async def talk(client: Client) -> None:
    """Send a message every tenth of a second (an application ``ping``)."""
    while True:
        await client.send({"type": "ping"})
        await asyncio.sleep(0.1)


def session_of(server: LabServer, user: str) -> Any:
    [session] = [s for s in server.hub.sessions.values() if s.user == user]
    return session


async def then_socket_closes_without_a_second_leave(server: LabServer, watcher: Client,
                                                    session: Any, user: str,
                                                    wait_until: Any) -> None:
    """The socket closes later (close_timeout); no second leave, no second event."""
    await wait_until(lambda: session.id not in server.hub.sessions, timeout=10,
                     what="the socket to close")
    await no_leave_of(watcher, user, 0.2)
    assert user not in server.presence("room")


async def test_dead_client_leaves_within_heartbeat_timeout(server: LabServer, connect,
                                                           raw_ws, wait_until) -> None:
    events: list[Event] = []
    server.on("presence.*", events.append)
    watcher = await watching(connect)
    raw = await dead_member(server, raw_ws, watcher, "dead")
    session = session_of(server, "dead")
    # A ping after the subscribe: from now on the client neither reads nor answers.
    await raw.read_until(lambda f: f.opcode == OP_PING, timeout=5)
    pinged = time.monotonic()
    at, info = await leave_of(watcher, "dead", timeout=TIMEOUT + 5)
    assert info == {"connections": 0, "reason": "timeout"}
    assert at - pinged <= TIMEOUT + SLACK, (
        f"the leave came {at - pinged:.2f} s after the unanswered ping; "
        f"allowed: heartbeat timeout {TIMEOUT} s + {SLACK} s")
    assert session.close_code == 4101
    await then_socket_closes_without_a_second_leave(server, watcher, session, "dead",
                                                    wait_until)
    assert [(e.type, e.user, getattr(e, "reason", None)) for e in events
            if e.user == "dead" and e.type != "presence.join"] == [
        ("presence.timeout", "dead", "timeout")]


async def test_idle_client_leaves_when_the_idle_timeout_closes_it(server: LabServer, connect,
                                                                  raw_ws,
                                                                  wait_until) -> None:
    watcher = await watching(connect)
    keepalive = asyncio.create_task(talk(watcher))  # the watcher is not idle
    try:
        start = time.monotonic()  # the raw client's last message is sent after this
        await dead_member(server, raw_ws, watcher, "idler")
        session = session_of(server, "idler")
        at, info = await leave_of(watcher, "idler", timeout=IDLE + 5)
        assert info == {"connections": 0, "reason": "timeout"}
        assert session.close_code == 4105
        assert at - start <= IDLE + SLACK + INTERVAL, (
            f"the leave came {at - start:.2f} s after the last message; "
            f"idle_timeout is {IDLE} s")
        await then_socket_closes_without_a_second_leave(server, watcher, session, "idler",
                                                        wait_until)
    finally:
        keepalive.cancel()


async def test_server_closed_session_leaves_at_once(server: LabServer, connect, raw_ws,
                                                    wait_until) -> None:
    watcher = await watching(connect)
    await dead_member(server, raw_ws, watcher, "gone")
    session = session_of(server, "gone")
    closed_at = time.monotonic()
    server.hub.close(session, 4200, "moved to another server")
    at, info = await leave_of(watcher, "gone", timeout=5)
    assert info == {"connections": 0, "reason": "closed"}
    assert at - closed_at <= SLACK, f"the leave came {at - closed_at:.2f} s after the close"
    assert session.id in server.hub.sessions, "the socket is still closing"
    await then_socket_closes_without_a_second_leave(server, watcher, session, "gone",
                                                    wait_until)


async def test_kicked_member_leaves_at_once(server: LabServer, connect, raw_ws) -> None:
    watcher = await watching(connect)
    await dead_member(server, raw_ws, watcher, "rude")
    kicked_at = time.monotonic()
    assert server.hub.kick("room", "rude") == 1
    at, info = await leave_of(watcher, "rude", timeout=5)
    assert info == {"connections": 0, "reason": "kicked"}
    assert at - kicked_at <= SLACK

"""Heartbeat over real sockets: a client that answers pings stays, one that does not is closed."""

from __future__ import annotations

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_PING

INTERVAL = 0.2
TIMEOUT = 1.0


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT)


async def test_client_that_answers_pings_stays_open(server: LabServer, connect,
                                                    wait_until) -> None:
    client = await connect()
    session = server.hub.sessions[client.session]
    assert client.welcome["heartbeat"] == {"interval": INTERVAL, "timeout": TIMEOUT}
    # Wait for several ping rounds, each answered.
    await wait_until(lambda: session.last_ping_at - session.connected_at >= 4 * INTERVAL,
                     timeout=10, what="four heartbeat intervals")
    await wait_until(lambda: session.rtt is not None, timeout=5, what="a pong")
    assert session.is_open and server.hub.stats.heartbeat_timeouts == 0
    assert await client.ping() >= 0


async def test_client_that_never_answers_is_closed_with_4101(server: LabServer, raw_ws,
                                                             wait_until) -> None:
    raw = await raw_ws(server.port)
    [session] = server.hub.sessions.values()
    # The raw client never reads, so it never answers the server's pings.
    await wait_until(lambda: not session.is_open, timeout=10, what="the heartbeat timeout")
    assert session.close_code == 4101
    assert server.hub.stats.heartbeat_timeouts == 1
    assert await raw.read_close() == 4101
    assert any(f.opcode == OP_PING for f in raw.frames), "the server pinged first"
    welcome = [f for f in raw.frames if f.opcode == 0x1][0]
    assert b'"welcome"' in welcome.payload
    await raw.send_close(4101)
    await wait_until(lambda: session.id not in server.hub.sessions, timeout=5,
                     what="the session to be dropped")

"""Memory per open connection (issue 7): what is released after the upgrade, and a bound.

benchmarks/memory_breakdown.py measures the full picture (RSS over thousands of
connections); these tests pin the mechanisms with a few dozen connections.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from realtime_lab import LabServer
from realtime_lab.transports.slim import RELEASED_HEADERS, ListDeque
from realtime_lab.transports.ws_protocol import LabWebSocketProtocol

# CPython 3.11 keeps up to 29 instance attributes in a compact values array
# (about 330 bytes); from the 30th the instance gets a full dict (about 1.6 KB).
COMPACT_ATTRIBUTES = 29


def _handler(server: LabServer, session_id: str) -> Any:
    return server.hub.sessions[session_id].port.handler  # type: ignore[attr-defined]


async def test_http_state_is_released_after_the_upgrade(server: LabServer, connect) -> None:
    client = await connect(user="ada")
    handler = _handler(server, client.session)
    assert handler.request.headers is RELEASED_HEADERS
    assert len(handler.request.headers) == 0
    assert handler.request.connection is None
    assert handler.request.server_connection is None
    assert handler.ui is None and handler._headers is None and handler._write_buffer is None
    with pytest.raises(RuntimeError, match="released"):
        handler.request.headers["X-Late"] = "1"
    # what log lines use is still there
    assert handler.request.method == "GET" and handler.request.remote_ip == "127.0.0.1"
    stream = handler.ws_connection.stream
    assert type(stream._write_futures) is ListDeque
    assert type(stream._write_buffer._buffers) is ListDeque
    # and the connection still works both ways
    await client.subscribe("room")
    await client.publish("room", {"n": 1})
    msg = await client.recv_message("room", timeout=5)
    assert msg["data"] == {"n": 1}


async def test_instances_stay_compact(server: LabServer, connect) -> None:
    client = await connect()
    await client.subscribe("room")  # a message went through the reader
    handler = _handler(server, client.session)
    protocol = handler.ws_connection
    assert isinstance(protocol, LabWebSocketProtocol)
    assert len(vars(protocol)) <= COMPACT_ATTRIBUTES, sorted(vars(protocol))
    assert len(vars(handler)) <= COMPACT_ATTRIBUTES, sorted(vars(handler))


def test_protocol_has_every_attribute_tornado_sets() -> None:
    """LabWebSocketProtocol skips WebSocketProtocol13.__init__: nothing may be missing."""
    params = _WebSocketParams(max_message_size=1 << 20)
    ours = LabWebSocketProtocol(object(), params, policy=None)  # type: ignore[arg-type]
    theirs = WebSocketProtocol13(object(), False, params)  # type: ignore[arg-type]
    missing = [name for name in vars(theirs) if not hasattr(ours, name)]
    assert missing == []
    assert ours.mask_outgoing is False and ours.params is params


async def test_an_idle_connection_keeps_no_task(server: LabServer, raw_ws, wait_until) -> None:
    """Tornado keeps two Tasks per connection (request and frame reader); we keep none."""
    await raw_ws(server.port)  # one first, so one-time tasks exist already
    await wait_until(lambda: len(server.hub.sessions) == 1, what="1 session")
    await asyncio.sleep(0.05)
    before = len(asyncio.all_tasks())
    raws = [await raw_ws(server.port) for _ in range(10)]
    for raw in raws:
        await raw.recv_json()  # welcome
    await wait_until(lambda: len(server.hub.sessions) == 11, what="11 sessions")
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) - before <= 1
    await raws[0].send_json({"type": "subscribe", "channel": "room", "id": 1})
    assert (await raws[0].recv_json())["type"] == "subscribed"
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) - before <= 1


def _server_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Traced bytes allocated in Tornado's and realtime_lab's server-side code."""
    keep = snapshot.filter_traces([
        tracemalloc.Filter(True, "*/tornado/*"),
        tracemalloc.Filter(True, "*/realtime_lab/*"),
    ]).filter_traces([tracemalloc.Filter(False, "*/realtime_lab/client/*")])
    return sum(stat.size for stat in keep.statistics("filename"))


async def test_server_side_bytes_per_connection_are_bounded(server: LabServer,
                                                            raw_ws, wait_until) -> None:
    """Tornado + realtime_lab allocations per open connection: ~3.5 KB (14 KB before)."""
    n = 60
    first = [await raw_ws(server.port) for _ in range(5)]  # warm caches
    await wait_until(lambda: len(server.hub.sessions) == 5, what="5 sessions")
    gc.collect()
    tracemalloc.start(1)
    try:
        before = _server_bytes(tracemalloc.take_snapshot())
        raws = [await raw_ws(server.port) for _ in range(n)]
        for raw in raws:
            await raw.recv_json()  # welcome: the connection is open on both sides
        await wait_until(lambda: len(server.hub.sessions) == 5 + n, what="all sessions")
        await asyncio.sleep(0.05)
        gc.collect()
        after = _server_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    per_connection = (after - before) / n
    assert per_connection < 6000, f"{per_connection:.0f} bytes per connection"
    assert len(first) == 5

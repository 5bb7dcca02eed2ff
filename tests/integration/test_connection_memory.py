"""Memory per open connection (issue 7): what is released after the upgrade, and a bound.

benchmarks/memory_breakdown.py measures the full picture (RSS over thousands of
connections); these tests pin the mechanisms with a few dozen connections.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from typing import Any

import pytest
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from realtime_lab import LabServer
from realtime_lab.transports.slim import RELEASED_HEADERS, ListDeque, prime_instance_keys
from realtime_lab.transports.tornado_ws import HANDLER_ATTRIBUTES
from realtime_lab.transports.ws_protocol import PROTOCOL_ATTRIBUTES, LabWebSocketProtocol

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


async def test_every_attribute_is_primed(server: LabServer, connect) -> None:
    """Names set on live instances are all in the primed lists (Tornado may add some)."""
    client = await connect()
    await client.subscribe("room")
    handler = _handler(server, client.session)
    assert set(vars(handler)) <= set(HANDLER_ATTRIBUTES)
    assert set(vars(handler.ws_connection)) <= set(PROTOCOL_ATTRIBUTES)
    assert len(PROTOCOL_ATTRIBUTES) <= COMPACT_ATTRIBUTES
    assert len(HANDLER_ATTRIBUTES) <= COMPACT_ATTRIBUTES


def test_priming_keeps_late_attributes_compact() -> None:
    """Names first set after many instances exist still fit once they are primed."""
    class Plain:
        pass

    class Primed:
        pass

    names = [f"attribute_{i}" for i in range(20)]
    prime_instance_keys(Primed, names)
    sizes = {}
    for cls in (Plain, Primed):
        objects = [cls() for _ in range(40)]  # each new instance shrinks the free room
        for obj in objects:
            for name in names:
                setattr(obj, name, 1)
        sizes[cls.__name__] = sys.getsizeof(vars(objects[-1]))
    assert sizes["Primed"] < 300, sizes
    if sys.version_info[:2] == (3, 11):  # the behaviour priming works around
        assert sizes["Plain"] > 400, sizes


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
        # opened concurrently, as a real load would: handshakes interleave
        raws = await asyncio.gather(*(raw_ws(server.port) for _ in range(n)))
        for raw in raws:
            await raw.recv_json()  # welcome: the connection is open on both sides
        await wait_until(lambda: len(server.hub.sessions) == 5 + n, what="all sessions")
        await asyncio.sleep(0.05)
        gc.collect()
        after = _server_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    per_connection = (after - before) / n
    print(f"server-side traced bytes per connection: {per_connection:.0f}")
    assert per_connection < 5000, f"{per_connection:.0f} bytes per connection"
    # compact instance dicts even though the handshakes interleaved (a full dict
    # is 830 bytes for a handler, 1.6 KB for a protocol; compact ones ~250-300)
    sizes = {}
    for session in server.hub.sessions.values():
        handler = session.port.handler  # type: ignore[attr-defined]
        sizes[id(handler)] = (sys.getsizeof(vars(handler)),
                              sys.getsizeof(vars(handler.ws_connection)))
    assert max(h for h, _ in sizes.values()) < 600, sizes
    assert max(p for _, p in sizes.values()) < 600, sizes
    assert len(first) == 5


def _count(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def test_a_closed_connection_is_freed_without_the_cycle_collector(
        server: LabServer, raw_ws, wait_until) -> None:
    """No reference cycle outlives a connection: with ``gc_freeze`` (or gc off), a cycle
    among frozen objects would never be collected, so churn would leak connections."""
    from realtime_lab.core.session import Session
    from realtime_lab.transports.tornado_ws import HubWebSocketHandler

    gc.collect()
    gc.disable()
    try:
        handlers, sessions = _count(HubWebSocketHandler), _count(Session)
        raws = [await raw_ws(server.port) for _ in range(20)]
        for raw in raws:
            await raw.recv_json()  # welcome
        await raws[0].send_json({"type": "subscribe", "channel": "room", "id": 1})
        assert (await raws[0].recv_json())["type"] == "subscribed"
        await wait_until(lambda: len(server.hub.sessions) == 20, what="20 sessions")
        assert _count(HubWebSocketHandler) == handlers + 20
        for raw in raws:
            raw.close()
        await wait_until(lambda: not server.hub.sessions, what="every session closed")
        await wait_until(lambda: _count(HubWebSocketHandler) == handlers
                         and _count(Session) == sessions,
                         what="closed connections freed by reference counting", timeout=5)
    finally:
        gc.enable()

"""Latency receipts: the lab's clients fill server.record()'s latency table by themselves;
hostile receipts are refused with documented codes, never internal_error."""

from __future__ import annotations

import asyncio
import json

from tornado.websocket import websocket_connect

import realtime_lab
from realtime_lab.instrument.loadgen import Load
from realtime_lab.protocol.messages import MAX_RECEIPTS


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_recorded_run_with_lab_clients_has_latency_rows() -> None:
    server = await realtime_lab.serve(port=0)
    rec = server.record()
    ada = await realtime_lab.connect(server.url, user="ada")
    bob = await realtime_lab.connect(server.url, user="bob")
    try:
        await ada.subscribe("room")
        await bob.subscribe("room")
        for i in range(30):
            await ada.publish("room", i)
        for _ in range(30):
            await bob.recv_message("room", timeout=5)
        await _until(lambda: len(rec.tables["latency"]) >= 60)  # both clients, every message
        latency = rec.to_frame("latency")
        assert set(latency["channel"]) == {"room"}
        assert latency["latency_ms"].between(0, 5000).all()
        assert rec.observe({"channel": "room"}) is None  # observe() stays for other clients
    finally:
        rec.stop()
        await ada.close()
        await bob.close()
        await server.stop()


async def test_nothing_is_reported_when_the_server_does_not_record() -> None:
    server = await realtime_lab.serve(port=0)
    ada = await realtime_lab.connect(server.url, user="ada")
    try:
        await ada.subscribe("room")
        before = server.inspect().counters["messages_in"]
        for i in range(10):
            server.publish("room", i)
        for _ in range(10):
            await ada.recv_message("room", timeout=5)
        await asyncio.sleep(0.7)  # longer than a receipt batch interval
        assert server.inspect().counters["messages_in"] == before
    finally:
        await ada.close()
        await server.stop()


async def test_receipts_off_in_the_client() -> None:
    server = await realtime_lab.serve(port=0)
    rec = server.record()
    ada = await realtime_lab.connect(server.url, user="ada", receipts=False)
    try:
        await ada.subscribe("room")
        server.publish("room", 1)
        await ada.recv_message("room", timeout=5)
        await asyncio.sleep(0.7)
        assert len(rec.tables["latency"]) == 0
    finally:
        rec.stop()
        await ada.close()
        await server.stop()


async def test_load_generator_reports_a_sample() -> None:
    server = await realtime_lab.serve(port=0, presence_channels=None)
    rec = server.record()
    load = Load(server.url, "fan", 20)
    try:
        await load.start()
        reply = await load.burst(10, 50, timeout=20)
        assert reply["received"] == 200
        await _until(lambda: len(rec.tables["latency"]) > 0)
        assert len(rec.tables["latency"]) <= 200  # a sample, at most what was measured
    finally:
        await load.close()
        rec.stop()
        await server.stop()


HOSTILE = [
    ({"type": "receipts", "channel": "room"}, "missing_field"),
    ({"type": "receipts", "latency_ms": [1]}, "missing_field"),
    ({"type": "receipts", "channel": 5, "latency_ms": [1]}, "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": "1"}, "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": []}, "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": [1] * (MAX_RECEIPTS + 1)},
     "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": [1e12]}, "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": [True]}, "bad_field"),
    ({"type": "receipts", "channel": "room", "latency_ms": [{"x": 1}]}, "bad_field"),
    ({"type": "receipts", "channel": "elsewhere", "latency_ms": [1]}, "not_subscribed"),
    ({"type": "receipts", "channel": "x" * 10_000, "latency_ms": [1]}, "not_subscribed"),
]


async def test_hostile_receipts_get_documented_codes() -> None:
    # the default batch window: the test reads the replies one by one, and the
    # subscriber's own join, announced right after its list, never comes back
    server = await realtime_lab.serve(port=0, error_limit=None)
    rec = server.record()
    ws = await websocket_connect(server.url + "?user=mallory")
    try:
        await ws.read_message()  # welcome
        ws.write_message(json.dumps({"type": "subscribe", "channel": "room", "id": 0}))
        assert json.loads(await ws.read_message())["type"] == "subscribed"
        await ws.read_message()  # presence_state
        for i, (msg, code) in enumerate(HOSTILE, start=1):
            ws.write_message(json.dumps({**msg, "id": i}))
            reply = json.loads(await asyncio.wait_for(ws.read_message(), 5))
            assert (reply["type"], reply["code"], reply["id"]) == ("error", code, i), msg
        ws.write_message(json.dumps({"type": "receipts", "channel": "room", "latency_ms": [2.5]}))
        ws.write_message(json.dumps({"type": "ping", "id": "after"}))
        assert json.loads(await asyncio.wait_for(ws.read_message(), 5)) == {
            "type": "pong", "id": "after"}  # a valid receipt has no reply
        assert rec.to_frame("latency")["latency_ms"].tolist() == [2.5]
        assert len(rec.symbols.names) < 10  # refused channel names were never stored
    finally:
        ws.close()
        rec.stop()
        await server.stop()

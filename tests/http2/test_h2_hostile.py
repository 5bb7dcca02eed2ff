"""Hostile input on the HTTP/2 listener: bad frames, bad header blocks, floods and
random bytes are answered with RFC 9113 codes (GOAWAY or RST_STREAM), never
INTERNAL_ERROR, within a bound in time, with nothing logged at ERROR; the server
serves the next client as before."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.transports.http2 import PREFACE

from .h2client import H2Client

pytestmark = pytest.mark.timeout(120)

GOAWAY, RST_STREAM = 0x7, 0x3


@pytest.fixture
async def server() -> AsyncIterator[LabServer]:
    srv = await realtime_lab.serve(port=0, options=ServerOptions(http2=True,
                                                                 handshake_timeout=2.0))
    try:
        yield srv
    finally:
        await srv.stop()


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def server_codes(data: bytes) -> list[tuple[int, int]]:
    """(frame type, error code) of the GOAWAY and RST_STREAM frames the server sent."""
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind = data[pos + 3]
        body = data[pos + 9:pos + 9 + length]
        if kind == GOAWAY and len(body) >= 8:
            out.append((GOAWAY, int.from_bytes(body[4:8], "big")))
        elif kind == RST_STREAM and len(body) >= 4:
            out.append((RST_STREAM, int.from_bytes(body[:4], "big")))
        pos += 9 + length
    return out


async def exchange(port: int, payload: bytes, wait: float = 0.5) -> tuple[bytes, bool]:
    """Send ``payload`` after the preface and an empty SETTINGS; what came back, and
    whether the server closed the connection within ``wait`` seconds of the last byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PREFACE + frame(0x4, 0, 0, b"") + payload)
    received = b""
    closed = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                closed = True
                break
            received += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return received, closed


def no_internal_error(codes: list[tuple[int, int]]) -> None:
    assert all(code != ErrorCodes.INTERNAL_ERROR for _, code in codes), codes


async def still_serves(server: LabServer) -> None:
    client = await H2Client().connect("127.0.0.1", server.port)
    try:
        ws = await client.websocket("/ws")
        assert ws.status == 200
        assert (await ws.recv_json())["type"] == "welcome"
    finally:
        await client.close()


BAD_FRAMES = {
    "data_on_stream_0": (frame(0x0, 0, 0, b"x"), ErrorCodes.PROTOCOL_ERROR),
    "headers_on_stream_0": (frame(0x1, 0x4, 0, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
    "even_stream_id": (frame(0x1, 0x5, 2, b"\x82\x86\x84"), ErrorCodes.PROTOCOL_ERROR),
    "settings_bad_length": (frame(0x4, 0, 0, b"\x00\x01\x00"), ErrorCodes.FRAME_SIZE_ERROR),
    "settings_on_stream": (frame(0x4, 0, 1, b""), ErrorCodes.PROTOCOL_ERROR),
    "window_update_zero": (frame(0x8, 0, 0, b"\x00\x00\x00\x00"), ErrorCodes.PROTOCOL_ERROR),
    "window_overflow": (frame(0x8, 0, 0, b"\x7f\xff\xff\xff"), ErrorCodes.FLOW_CONTROL_ERROR),
    "ping_bad_length": (frame(0x6, 0, 0, b"1234"), ErrorCodes.FRAME_SIZE_ERROR),
    # h2 answers an undecodable header block with PROTOCOL_ERROR (RFC 9113: COMPRESSION_ERROR)
    "bad_hpack": (frame(0x1, 0x5, 1, b"\xff\xff\xff\xff\xff"), ErrorCodes.PROTOCOL_ERROR),
    "frame_too_large": (struct.pack(">I", 1 << 20)[1:] + bytes([0, 0]) + b"\x00\x00\x00\x01"
                        + b"x" * 100, ErrorCodes.FRAME_SIZE_ERROR),
    "continuation_without_headers": (frame(0x9, 0x4, 1, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
    "settings_enable_push_2": (frame(0x4, 0, 0, b"\x00\x02\x00\x00\x00\x02"),
                               ErrorCodes.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
async def test_bad_frame_answered_with_its_code(server: LabServer, name: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    payload, expected = BAD_FRAMES[name]
    with caplog.at_level(logging.INFO, logger="realtime_lab"):
        received, closed = await exchange(server.port, payload, wait=5.0)
    codes = server_codes(received)
    assert (GOAWAY, expected) in codes, (name, codes)
    assert closed, "the server closes the connection after GOAWAY"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def header_cases() -> dict[str, list[tuple[str, str]]]:
    base = [(":method", "GET"), (":scheme", "http"), (":path", "/health"),
            (":authority", "127.0.0.1")]
    return {
        "no_path": [h for h in base if h[0] != ":path"],
        "uppercase_name": [*base, ("X-Upper", "1")],
        "connection_header": [*base, ("connection", "keep-alive")],
        "protocol_on_get": [*base, (":protocol", "websocket")],
        "pseudo_after_regular": [("x", "1"), *base],
        "duplicate_method": [*base, (":method", "POST")],
        "te_not_trailers": [*base, ("te", "gzip")],
        "unknown_pseudo": [*base, (":bogus", "1")],
    }


@pytest.mark.parametrize("name", sorted(header_cases()))
async def test_malformed_request_heads_reset_the_stream(server: LabServer, name: str,
                                                        caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8",
                                          validate_outbound_headers=False,
                                          normalize_outbound_headers=False))
    client.initiate_connection()
    client.send_headers(1, header_cases()[name], end_stream=True)
    with caplog.at_level(logging.INFO, logger="realtime_lab"):
        received, _closed = await exchange(server.port, client.data_to_send()[len(PREFACE):],
                                           wait=5.0)
    codes = server_codes(received)
    # h2 treats a malformed head as a connection error (GOAWAY PROTOCOL_ERROR)
    assert codes and all(code == ErrorCodes.PROTOCOL_ERROR for _, code in codes), codes
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await still_serves(server)


async def test_random_frames_fuzz(server: LabServer, caplog: pytest.LogCaptureFixture) -> None:
    """200 connections of random frames (random types, flags, stream ids, payloads)."""
    rng = random.Random(8441)
    with caplog.at_level(logging.WARNING, logger="realtime_lab"):
        for _ in range(200):
            payload = b"".join(
                frame(rng.randrange(12), rng.randrange(256), rng.choice([0, 1, 3, 5, 2**31 - 1]),
                      rng.randbytes(rng.choice([0, 1, 4, 5, 8, 9, 30])))
                for _ in range(rng.randrange(1, 6)))
            if rng.random() < 0.2:
                payload = rng.randbytes(rng.randrange(1, 200))
            received, _closed = await exchange(server.port, payload, wait=0.05)
            no_internal_error(server_codes(received))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await still_serves(server)


async def test_random_websocket_bytes_on_a_stream(server: LabServer) -> None:
    """Random bytes as a WebSocket's DATA: the WebSocket fails (1002/1007/1009), the
    HTTP/2 connection and its other streams live on."""
    rng = random.Random(6455)
    client = await H2Client().connect("127.0.0.1", server.port)
    try:
        keeper = await client.websocket("/ws")
        await keeper.recv_json()
        for _ in range(20):
            ws = await client.websocket("/ws")
            await ws.recv_json()
            client.h2.send_data(ws.sid, rng.randbytes(rng.randrange(2, 300)))
            client.flush()
        await keeper.send({"type": "ping", "id": 1})
        assert (await keeper.recv_type("pong"))["id"] == 1
        assert client.terminated is None
    finally:
        await client.close()


async def test_silent_connection_closed_after_handshake_timeout(server: LabServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed, nothing said
    finally:
        writer.close()


async def test_half_preface_then_silence_is_closed(server: LabServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREFACE[:10])
    try:  # closed (a reset, since the 10 bytes were never read) within handshake_timeout
        assert await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        pass
    finally:
        writer.close()

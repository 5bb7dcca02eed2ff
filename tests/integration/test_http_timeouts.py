"""HTTP requests that arrive too slowly are cut off (issue 13, 6).

A client that sends its request body at one byte per second used to keep its
connection (and a file descriptor) forever: Tornado has no body timeout unless
one is given. Request heads (``handshake_timeout``) and bodies
(``http_body_timeout``) now both have a bound.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import realtime_lab
from realtime_lab import ServerOptions

BODY_TIMEOUT = 0.5


async def drip(port: int, head: bytes, byte: bytes, interval: float, deadline: float) -> float:
    """Send ``head`` then ``byte`` every ``interval`` s until the server hangs up; return
    how long after the head it did (fail if it has not after ``deadline`` s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        start = time.monotonic()
        while time.monotonic() - start < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), interval)
            except TimeoutError:
                try:
                    writer.write(byte)
                    await writer.drain()
                except ConnectionError:
                    return time.monotonic() - start
                continue
            if not data:
                return time.monotonic() - start
            raise AssertionError(f"the server answered a request it never got whole: {data!r}")
        raise AssertionError(f"the connection was still open after {deadline} s")
    finally:
        writer.close()


async def test_slow_body_is_cut_within_the_body_timeout() -> None:
    server = await realtime_lab.serve(port=0, api_token="t", http_body_timeout=BODY_TIMEOUT)
    try:
        head = (f"POST /api/channels/news/messages HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Authorization: Bearer t\r\nContent-Type: application/json\r\n"
                "Content-Length: 65536\r\n\r\n").encode()
        took = await drip(server.port, head, b" ", 0.1, deadline=BODY_TIMEOUT + 5)
        assert took >= BODY_TIMEOUT * 0.9
        # the server still answers others
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await server.stop()


async def test_slow_request_head_is_cut_within_the_handshake_timeout() -> None:
    server = await realtime_lab.serve(port=0, handshake_timeout=BODY_TIMEOUT)
    try:
        took = await drip(server.port, b"GET /ws HTTP/1.1\r\n", b"X", 0.1,
                          deadline=BODY_TIMEOUT + 5)
        assert took >= BODY_TIMEOUT * 0.9
    finally:
        await server.stop()


def test_http_limits_have_documented_defaults() -> None:
    opts = ServerOptions()
    assert opts.http_body_timeout == 10.0
    assert opts.handshake_timeout == 10.0
    assert opts.max_http_header_bytes == 65536
    for bad in ({"http_body_timeout": 0}, {"http_body_timeout": float("inf")},
                {"max_http_header_bytes": 0}, {"max_http_header_bytes": 1.5}):
        with pytest.raises(ValueError):
            ServerOptions(**bad)  # type: ignore[arg-type]


async def test_oversized_request_head_is_dropped() -> None:
    server = await realtime_lab.serve(port=0, max_http_header_bytes=4096)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 8192
                     + b"\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, no answer
        writer.close()
    finally:
        await server.stop()

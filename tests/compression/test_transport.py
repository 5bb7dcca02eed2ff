"""Binary protocol and permessage-deflate over real sockets (websockets client and raw frames)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import websockets

import realtime_lab
from realtime_lab.protocol import deflate as deflate_mod
from realtime_lab.protocol.deflate import CompressionPolicy

MSGPACK = "realtime-lab.v1.msgpack"
JSONP = "realtime-lab.v1.json"


@pytest.fixture
async def server() -> AsyncIterator[realtime_lab.LabServer]:
    srv = await realtime_lab.serve(port=0, conformance_echo=True)
    try:
        yield srv
    finally:
        await srv.stop()


def decode(raw: str | bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)


async def next_of(ws: Any, mtype: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = decode(await ws.recv())
            if msg["type"] == mtype or mtype == "*" and msg["type"] in ("published", "message"):
                return msg


def pack(msg: dict[str, Any], binary: bool) -> str | bytes:
    return msgpack.packb(msg) if binary else json.dumps(msg)


async def test_mixed_subscribers_one_encoding_per_format(
        server: realtime_lab.LabServer, monkeypatch: pytest.MonkeyPatch) -> None:
    compress_calls: list[int] = []
    real = deflate_mod.Deflater.compress

    def counting(self: deflate_mod.Deflater, payload: bytes) -> bytes:
        compress_calls.append(len(payload))
        return real(self, payload)

    monkeypatch.setattr(deflate_mod.Deflater, "compress", counting)
    kinds = [(MSGPACK, "deflate"), (MSGPACK, None), (JSONP, "deflate"), (None, None),
             (None, "deflate")] * 4  # 20 subscribers, 4 wire formats
    conns = []
    for sub, comp in kinds:
        ws = await websockets.connect(server.url, subprotocols=[sub] if sub else None,
                                      compression=comp)
        conns.append(ws)
        assert ws.subprotocol == sub
        assert (ws.response.headers.get("Sec-WebSocket-Extensions") is not None) == bool(comp)
        binary = sub == MSGPACK
        await ws.send(pack({"type": "subscribe", "channel": "room", "id": 1}, binary))
        assert (await next_of(ws, "subscribed"))["id"] == 1
    data = {"rows": [{"id": i, "name": "sensor", "status": "ok"} for i in range(30)],
            "blob": b"\x00\x01\x02" * 10}
    compress_calls.clear()
    assert server.publish("room", data) == 20
    for (sub, _comp), ws in zip(kinds, conns, strict=True):
        msg = await next_of(ws, "message")
        if sub == MSGPACK:
            assert msg["data"] == data  # bytes arrive raw
        else:
            assert msg["data"]["blob"] == {"$bytes": base64.b64encode(data["blob"]).decode()}
            assert msg["data"]["rows"] == data["rows"]
    # JSON+deflate and msgpack+deflate: one compression each for 20 subscribers
    assert len(compress_calls) == 2
    compressed = [s for s in server.hub.sessions.values() if s.wire.compressed]
    plain = [s for s in server.hub.sessions.values() if not s.wire.compressed]
    assert len(compressed) == 12 and len(plain) == 8
    for ws in conns:
        await ws.close()


async def test_msgpack_publish_reaches_json_and_errors_stay_per_protocol(
        server: realtime_lab.LabServer) -> None:
    async with websockets.connect(server.url, subprotocols=[MSGPACK]) as mp, \
            websockets.connect(server.url) as js:
        for ws, binary in ((mp, True), (js, False)):
            await ws.send(pack({"type": "subscribe", "channel": "r", "id": "s"}, binary))
            await next_of(ws, "subscribed")
        await mp.send(msgpack.packb({"type": "publish", "channel": "r", "data": b"\xff\x00",
                                     "id": 7}))
        got = {}
        while len(got) < 2:  # the reply and the message, in either order
            msg = await next_of(mp, "*")
            got[msg["type"]] = msg
        assert got["published"]["id"] == 7 and got["message"]["data"] == b"\xff\x00"
        assert (await next_of(js, "message"))["data"] == {"$bytes": "/wA="}
        # a JSON client's bytes object reaches the msgpack client as bytes
        await js.send(json.dumps({"type": "publish", "channel": "r", "data": {"$bytes": "AAE="}}))
        assert (await next_of(mp, "message"))["data"] == b"\x00\x01"
        # bad MessagePack: an error, the connection stays open
        await mp.send(b"\xc1")
        err = await next_of(mp, "error")
        assert err["code"] == "bad_msgpack"
        await mp.send(msgpack.packb({"type": "ping", "id": 1}))
        assert (await next_of(mp, "pong"))["id"] == 1
        # text frames are JSON on either protocol
        await mp.send(json.dumps({"type": "ping", "id": 2}))
        assert (await next_of(mp, "pong"))["id"] == 2
        # binary on the JSON protocol is still refused
        await js.send(b"\x80")
        assert (await next_of(js, "error"))["code"] == "binary_not_supported"


async def test_compressed_frames_on_the_wire(server: realtime_lab.LabServer) -> None:
    async with websockets.connect(server.url) as ws, \
            websockets.connect(server.url, compression=None) as raw:
        for c in (ws, raw):
            await c.send(json.dumps({"type": "subscribe", "channel": "c"}))
            await next_of(c, "subscribed")
        before = {s.id: s.stats.bytes_out for s in server.hub.sessions.values()}
        server.publish("c", {"text": "all work and no play " * 60})  # ~1.3 KB
        await next_of(ws, "message")
        await next_of(raw, "message")
        sent = {s.wire.compressed: s.stats.bytes_out - before[s.id]
                for s in server.hub.sessions.values()}
        assert sent[False] > 1300 and sent[True] < sent[False] / 5


async def test_inbound_compressed_messages_from_websockets_client(
        server: realtime_lab.LabServer) -> None:
    async with websockets.connect(server.url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "z", "id": 1}))
        await next_of(ws, "subscribed")
        big = "compress me " * 2000  # 24 KB compressed well by the client
        await ws.send(json.dumps({"type": "publish", "channel": "z", "data": big}))
        assert (await next_of(ws, "message"))["data"] == big


# ---------------------------------------------------------------- raw frames


class Raw:
    """A hand-made WebSocket client that sends whatever frames a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 headers: str) -> None:
        self.reader, self.writer, self.headers = reader, writer, headers

    @classmethod
    async def connect(cls, port: int, path: str = "/ws", extensions: str | None = None,
                      protocol: str | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if extensions:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.startswith("HTTP/1.1 101"), head
        return cls(reader, writer, head)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> None:
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([b0, 0x80 | n]) if n < 126 else (
            struct.pack("!BBH", b0, 0x80 | 126, n) if n < 65536
            else struct.pack("!BBQ", b0, 0x80 | 127, n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def frame(self) -> tuple[int, bool, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, bool(b0 & 0x40), await self.reader.readexactly(n)

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server's close frame; return its code."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    opcode, _, payload = await self.frame()
                except asyncio.IncompleteReadError:
                    return None
                if opcode == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def close(self) -> None:
        self.writer.close()


def zip_payload(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def test_decompression_bomb_closes_1009_and_others_unaffected(
        server: realtime_lab.LabServer) -> None:
    async with websockets.connect(server.url) as healthy:
        await healthy.send(json.dumps({"type": "subscribe", "channel": "h"}))
        await next_of(healthy, "subscribed")
        raw = await Raw.connect(server.port, extensions="permessage-deflate")
        assert "server_no_context_takeover" in raw.headers
        # 64 MiB of JSON-ish text in ~64 KB; max_message_bytes is 64 KiB
        bomb = zip_payload(b'{"type":"ping","pad":"' + b" " * (64 << 20) + b'"}')
        assert len(bomb) < server.options.max_message_bytes
        raw.send(1, bomb, rsv1=True)
        assert await raw.close_code() == 1009
        raw.close()
        server.publish("h", "still here")
        assert (await next_of(healthy, "message"))["data"] == "still here"


@pytest.mark.parametrize(("frames", "code"), [
    ([(1, b"\xff\xff\xff\xffnot deflate", True, True)], 1002),  # corrupt DEFLATE
    ([(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", False, True)], 1007),
    ([(1, b"\xf0\x90", False, False), (0, b"\x00\x00", False, True)], 1007),  # fail fast
    ([(8, struct.pack("!H", 1005), False, True)], 1002),  # invalid close code
    ([(8, struct.pack("!H", 999), False, True)], 1002),
    ([(8, b"\x03", False, True)], 1002),  # one-byte close payload
    ([(8, struct.pack("!H", 1000) + b"\xff", False, True)], 1007),  # bad UTF-8 reason
    ([(9, b"x", True, True)], 1002),  # RSV1 on a control frame
    ([(0, b"orphan", False, True)], 1002),  # continuation without a message
    ([(3, b"", False, True)], 1002),  # reserved opcode
    ([(8, struct.pack("!H", 4000), False, True)], 4000),  # valid: echoed
])
async def test_protocol_violations_get_their_close_code(
        server: realtime_lab.LabServer, frames: list[tuple[int, bytes, bool, bool]],
        code: int) -> None:
    raw = await Raw.connect(server.port, extensions="permessage-deflate")
    opcode, _, welcome = await raw.frame()
    assert opcode == 1 and json.loads(welcome)["type"] == "welcome"
    for op, payload, rsv1, fin in frames:
        raw.send(op, payload, rsv1=rsv1, fin=fin)
    assert await raw.close_code() == code
    raw.close()


async def test_rsv1_without_negotiation_is_refused(server: realtime_lab.LabServer) -> None:
    raw = await Raw.connect(server.port)
    assert "permessage-deflate" not in raw.headers
    await raw.frame()
    raw.send(1, zip_payload(b'{"type":"ping"}'), rsv1=True)
    assert await raw.close_code() == 1002
    raw.close()


async def test_compression_policy_off_and_threshold() -> None:
    srv = await realtime_lab.serve(port=0, compression=False)
    try:
        async with websockets.connect(srv.url) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    finally:
        await srv.stop()
    srv = await realtime_lab.serve(port=0, compression=CompressionPolicy(threshold=10_000))
    try:
        raw = await Raw.connect(srv.port, extensions="permessage-deflate")
        await raw.frame()
        raw.send(1, json.dumps({"type": "subscribe", "channel": "t"}).encode())
        while json.loads((await raw.frame())[2] or b"{}").get("type") != "subscribed":
            pass
        srv.publish("t", "x" * 2000)  # below the threshold: sent plain
        while True:
            opcode, rsv1, payload = await raw.frame()
            if opcode == 1 and json.loads(payload)["type"] == "message":
                assert not rsv1
                break
        srv.publish("t", "x" * 20_000)
        opcode, rsv1, payload = await raw.frame()
        while opcode != 1:
            opcode, rsv1, payload = await raw.frame()
        assert rsv1 and json.loads(zlib.decompressobj(-15).decompress(
            payload + b"\x00\x00\xff\xff"))["data"] == "x" * 20_000
        raw.close()
    finally:
        await srv.stop()


async def test_python_client_over_msgpack_with_compression(server: realtime_lab.LabServer) -> None:
    from realtime_lab.client import Client

    mp = await Client(server.url, protocol="msgpack", compression=True).connect()
    js = await Client(server.url).connect()
    try:
        await mp.subscribe("py")
        await js.subscribe("py")
        assert sorted(s.wire.label() for s in server.hub.sessions.values()) == [
            "json", "msgpack+deflate"]
        await js.publish("py", {"blob": b"\x00\x01", "text": "y" * 600})
        got = await mp.recv_message("py", timeout=5)
        assert got["data"] == {"blob": b"\x00\x01", "text": "y" * 600}
        assert (await js.recv_message("py", timeout=5))["data"]["blob"] == b"\x00\x01"
        await mp.publish("py", b"raw")
        assert (await js.recv_message("py", timeout=5))["data"] == b"raw"
    finally:
        await mp.close()
        await js.close()


async def test_plain_tornado_client_with_client_context_takeover() -> None:
    """Tornado's client ignores client_no_context_takeover: the policy option serves it."""
    from tornado.websocket import websocket_connect

    srv = await realtime_lab.serve(
        port=0, compression=CompressionPolicy(client_context_takeover=True))
    try:
        ws = await websocket_connect(srv.url, compression_options={})
        assert "client_no_context_takeover" not in ws.headers["Sec-WebSocket-Extensions"]
        for i in range(3):  # same text each time: the client refers back to earlier messages
            await ws.write_message(json.dumps({"type": "ping", "id": i, "pad": "x" * 300}))
        ids = []
        while len(ids) < 3:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 5))
            if msg["type"] == "pong":
                ids.append(msg["id"])
        assert ids == [0, 1, 2]
        ws.close()
    finally:
        await srv.stop()


@pytest.mark.parametrize("keep", [True, False], ids=["context_takeover", "no_context_takeover"])
async def test_python_client_compression_under_either_client_policy(keep: bool) -> None:
    """Tornado's client cannot honour ``client_no_context_takeover`` (it drops value-less
    answer parameters and keeps its context): against a server that asks for it, the
    Python client connects again without compression instead of failing with 1002."""
    from realtime_lab.client import Client

    srv = await realtime_lab.serve(
        port=0, compression=CompressionPolicy(client_context_takeover=keep, threshold=0))
    client = await Client(srv.url, compression=True).connect()
    try:
        await client.subscribe("z")
        (session,) = srv.hub.sessions.values()
        assert session.wire.compressed is keep
        text = "the same words again and again " * 20
        for i in range(4):  # a context-keeping compressor refers back to message i-1
            await client.publish("z", {"i": i, "text": text})
            got = await client.recv_message("z", timeout=5)
            assert got["data"] == {"i": i, "text": text}
        assert client.state.name == "OPEN" and session.is_open
    finally:
        await client.close()
        await srv.stop()

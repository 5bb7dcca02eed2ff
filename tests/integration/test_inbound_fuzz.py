"""Issue 13, point 2: ``internal_error`` is unreachable from anything a client sends.

Hypothesis throws hostile input at the inbound path: JSON texts (well-formed messages
with huge integers, ``1e400``, NaN, lone surrogates, deep nesting, odd keys, bytes
objects; and random text), and MessagePack bytes (maps with NaN, integer and bytes
keys, ext types, deep nesting; and random bytes). JSON and msgpack subscribers are
present on plain, presence and history channels. After each input: no exception
escaped, nothing answered ``internal_error``, every frame the server wrote decodes
within the data model, and a publish afterwards still reaches every subscriber.

The socket-free part goes through the public Hub API with fake ports
(realtime_lab.testing) and runs thousands of examples; the short real-socket part sends
the same kinds of input to a running server.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_lab import LabServer, ServerOptions
from realtime_lab.core import Hub, Session
from realtime_lab.core.history import HistoryRule
from realtime_lab.protocol import codec, msgpack_codec
from realtime_lab.protocol.frames import OP_BINARY, OP_CLOSE, OP_TEXT, parse_frames
from realtime_lab.protocol.values import INT_MAX, INT_MIN
from realtime_lab.protocol.wire import MSGPACK, wire_format
from realtime_lab.testing import ManualClock, RecordingPort, TurnScheduler

CHANNELS = ("room", "members", "feed")


def fuzz_options() -> ServerOptions:
    return ServerOptions(presence_channels="members", error_limit=None,
                         history=(HistoryRule("feed", size=5, ttl=None),))


class Raw:
    """A JSON number written as is (``1e400``, ``-0``, ``18446744073709551616``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def nest(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf] if levels % 2 else {"n": leaf}
    return leaf


strings = st.text(max_size=8) | st.sampled_from(
    ["\ud800", "\udfff", "a\udbffz", "\U0001f600", "\u2028", "\x00", "$bytes", "__proto__",
     "type", "", "k" * 200])
numbers = (st.integers() | st.integers(min_value=INT_MAX - 2, max_value=INT_MAX + 2)
           | st.integers(min_value=INT_MIN - 2, max_value=INT_MIN + 2)
           | st.floats() | st.sampled_from(
               [Raw("1e400"), Raw("-1E+400"), Raw("1e-400"), Raw("9" * 400 + ".5"),
                Raw("NaN"), Raw("-Infinity"), Raw("-0"), Raw(str(2**64)), Raw("1" * 5000)]))
scalars = st.none() | st.booleans() | numbers | strings | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(strings, inner, max_size=4)
                   | st.builds(nest, st.integers(60, 70), inner)
                   | st.builds(lambda b: {"$bytes": b}, st.text(max_size=8))),
    max_leaves=12)


def to_json(value: Any, ascii_only: bool) -> str:
    """JSON text of ``value``; ``Raw`` numbers as written, bytes as ``{"$bytes": b64}``."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=ascii_only)}:{to_json(v, ascii_only)}"
                 for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    if isinstance(value, bytes):
        return codec.encode({"v": value})[5:-1]
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def json_texts(draw: st.DrawFn) -> str | bytes:
    """A text frame: a message of a known type with hostile values, or random text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40) | st.binary(max_size=40))
    mtype = draw(st.sampled_from(["publish", "publish", "subscribe", "unsubscribe", "presence",
                                  "ping", "whatever"]))
    message: dict[str, Any] = {"type": mtype, "channel": draw(st.sampled_from(CHANNELS)
                                                              | strings)}
    for field in draw(st.lists(st.sampled_from(["data", "id", "meta", "state", "priority",
                                                "since", "auth"]), max_size=3)):
        message[field] = draw(values)
    if mtype == "publish" and "data" not in message:
        message["data"] = draw(values)
    text = to_json(message, draw(st.booleans()))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # raw surrogates: a transport delivers bytes, not this str
        return text.encode("utf-8", "surrogatepass")  # (invalid UTF-8: bad_json)
    return text


def packable(value: Any) -> Any:
    """``value`` with what MessagePack cannot pack replaced, plus what only it can carry."""
    if isinstance(value, Raw):
        return math.inf if value.text.startswith("1e4") else -0.0
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        return msgpack.ExtType(1, b"x")
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass") if not value.isascii() else value
    if isinstance(value, list):
        return [packable(v) for v in value]
    if isinstance(value, dict):
        return {(1 if k == "type" else packable(k)): packable(v) for k, v in value.items()}
    return value


@st.composite
def msgpack_frames(draw: st.DrawFn) -> bytes:
    """A binary frame on the msgpack protocol: a hostile message, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40))
    message = {"type": draw(st.sampled_from(["publish", "presence", "ping"])),
               "channel": draw(st.sampled_from(CHANNELS)), "data": draw(values),
               "meta": {"m": draw(values)}, "id": draw(st.integers(0, 9))}
    if draw(st.booleans()):
        message = packable(message)
    try:
        return msgpack.packb(message)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError):
        return msgpack.packb({"type": "publish", "channel": "room", "data": packable(message)})


class Lab:
    """A hub with a JSON and a msgpack subscriber on each channel, and two publishers."""

    def __init__(self) -> None:
        self.loop = TurnScheduler()
        self.hub = Hub(fuzz_options(), clock=ManualClock(), schedule=self.loop)
        self.subscribers = [self.open(binary) for binary in (False, True) for _ in CHANNELS]
        for session, channel in zip(self.subscribers, CHANNELS * 2, strict=True):
            self.hub.subscribe(session, channel)
        self.text = self.open(False)
        self.binary = self.open(True)
        self.loop.run()

    def open(self, binary: bool) -> Session:
        wire = wire_format(MSGPACK if binary else "json")
        return self.hub.open(RecordingPort(wire=wire))  # type: ignore[no-any-return]

    def everyone(self) -> list[Session]:
        return [*self.subscribers, self.text, self.binary]

    def check(self) -> None:
        """No internal_error; every frame written is within the data model; delivery works."""
        self.loop.run()
        assert self.hub.stats.internal_errors == 0
        for session in self.everyone():
            for message in sent(session.port.writes):  # type: ignore[attr-defined]
                assert message.get("code") != "internal_error", message
            session.port.writes.clear()  # type: ignore[attr-defined]
        for channel in CHANNELS:
            assert self.hub.publish(channel, {"canary": channel}) >= 2
        self.loop.run()
        for session in self.subscribers:
            got = [m for m in sent(session.port.writes) if m["type"] == "message"]  # type: ignore[attr-defined]
            assert got and got[-1]["data"] == {"canary": got[-1]["channel"]}
            session.port.writes.clear()  # type: ignore[attr-defined]


def sent(writes: list[bytes]) -> list[dict[str, Any]]:
    """The messages in what the server wrote, decoded by the strict codecs (data model)."""
    frames, rest = parse_frames(b"".join(writes))
    assert rest == b""
    out = []
    for frame in frames:
        if frame.opcode == OP_TEXT:
            out.append(codec.decode(frame.payload.decode("utf-8")))
        elif frame.opcode == OP_BINARY:
            out.append(msgpack_codec.decode(frame.payload))
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs=st.lists(json_texts() | msgpack_frames(), min_size=1, max_size=4))
def test_no_input_reaches_internal_error(inputs: list[str | bytes]) -> None:
    lab = Lab()
    for item in inputs:
        lab.hub.receive_text(lab.text, item)  # bytes here: a text frame's UTF-8 (or not)
        if isinstance(item, bytes):
            lab.hub.receive_binary(lab.binary, item)
    lab.check()


@pytest.mark.parametrize("text", [
    '{"type":"publish","channel":"room","data":18446744073709551616}',
    '{"type":"publish","channel":"room","data":1e400}',
    '{"type":"publish","channel":"room","data":"\\ud800"}',
    '{"type":"publish","channel":"room","data":{"\\udc00":1}}',
    '{"type":"publish","channel":"room","data":' + "[" * 100 + "]" * 100 + "}",
    '{"type":"ping","id":"\\ud800"}',
    '{"type":"ping","id":18446744073709551616}',
    '{"type":"subscribe","channel":"feed","since":{"offset":18446744073709551616,"epoch":"x"}}',
    '{"type":"presence","channel":"members","meta":{"a":1e400}}',
    '{"type":"presence","channel":"members","state":"\\ud800"}',
    '{"type":"\\ud800"}',
    '{"type":"subscribe","channel":"\\ud800"}',
])
def test_known_hostile_inputs(text: str) -> None:
    lab = Lab()
    lab.hub.receive_text(lab.text, text)
    lab.check()


# ---------------------------------------------------------------- over real sockets


@pytest.fixture
def options() -> ServerOptions:
    return fuzz_options()


class Live:
    """A running server with a JSON and a msgpack subscriber per channel, and a JSON and a
    msgpack publisher, all raw connections (conftest's RawWebSocket)."""

    def __init__(self, server: LabServer) -> None:
        self.server = server
        self.subscribers: list[Any] = []
        self.round = 0

    async def open(self, raw_ws: Any) -> None:
        for binary in (False, True):
            for channel in CHANNELS:
                ws = await self.connect(raw_ws, binary)
                await self.send(ws, {"type": "subscribe", "channel": channel, "id": "s"})
                await self.until(ws, lambda m: m.get("id") == "s")
                self.subscribers.append(ws)
        self.text = await self.connect(raw_ws, False)
        self.binary = await self.connect(raw_ws, True)

    async def connect(self, raw_ws: Any, binary: bool) -> Any:
        ws = await raw_ws(self.server.port, subprotocol="realtime-lab.v1.msgpack" if binary
                          else None)
        ws.binary = binary
        await self.until(ws, lambda m: m["type"] == "welcome")
        return ws

    @staticmethod
    async def send(ws: Any, message: dict[str, Any]) -> None:
        if ws.binary:
            await ws.send_frame(OP_BINARY, msgpack.packb(message))
        else:
            await ws.send_json(message)

    @staticmethod
    async def until(ws: Any, done: Any) -> None:
        """Read until a message matches ``done``; none may be internal_error or a close."""
        while True:
            frame = await ws.read_until(lambda f: f.opcode in (OP_TEXT, OP_BINARY, OP_CLOSE),
                                        10.0)
            assert frame.opcode != OP_CLOSE, struct.unpack("!H", frame.payload[:2])
            [message] = sent([frame_bytes(frame.opcode, frame.payload)])
            assert message.get("code") != "internal_error", message
            if done(message):
                return

    async def run(self, inputs: list[str | bytes]) -> None:
        self.round += 1
        for item in inputs:
            if isinstance(item, str):
                await self.text.send_frame(OP_TEXT, item.encode())
            else:  # bytes: MessagePack (or garbage) on the binary protocol
                await self.binary.send_frame(OP_BINARY, item)
        rid = f"after-{self.round}"
        for ws in (self.text, self.binary):  # answered after every input before it
            await self.send(ws, {"type": "ping", "id": rid})
            await self.until(ws, lambda m: m.get("id") == rid and m["type"] == "pong")
        canary = {"canary": self.round}
        for channel in CHANNELS:
            self.server.publish(channel, canary)
        for ws in self.subscribers:
            await self.until(ws, lambda m: m["type"] == "message" and m["data"] == canary)
        assert self.server.hub.stats.internal_errors == 0


def frame_bytes(opcode: int, payload: bytes) -> bytes:
    from realtime_lab.protocol.frames import build_frame

    return build_frame(opcode, payload)


@pytest.fixture
async def live(server: LabServer, raw_ws: Any) -> Live:
    lab = Live(server)
    await lab.open(raw_ws)
    return lab


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs=st.lists(json_texts() | msgpack_frames(), min_size=1, max_size=5))
async def test_hostile_input_over_real_sockets(live: Live, inputs: list[str | bytes],
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="realtime_lab"):
        await live.run(inputs)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

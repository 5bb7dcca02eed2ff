"""The MessagePack codec, the JSON bytes form and per-broadcast frame variants."""

from __future__ import annotations

import math
import zlib

import msgpack
import pytest

from realtime_lab.errors import BadMessagePack
from realtime_lab.protocol import codec, msgpack_codec
from realtime_lab.protocol.deflate import deflater
from realtime_lab.protocol.frames import OP_BINARY, OP_TEXT, parse_frames, text_frame
from realtime_lab.protocol.wire import (
    JSON_WIRE,
    FrameVariants,
    frame_for,
    wire_format,
)

MSG = {"type": "message", "channel": "room", "data": {"n": 1, "blob": b"\x00\xff" * 4,
                                                      "f": 1.5, "list": [None, True, "x"]}}


def test_round_trip_keeps_bytes_raw() -> None:
    packed = msgpack_codec.encode(MSG)
    assert b"\xc4\x08\x00\xff" in packed  # bin 8 with its 8 raw bytes, no base64
    assert msgpack_codec.decode(packed) == MSG


@pytest.mark.parametrize(("value", "why"), [
    (msgpack.packb({1: "x"}), "map key"),
    (msgpack.packb({"d": math.nan}), "NaN"),
    (msgpack.packb({"d": [math.inf]}), "NaN"),
    (msgpack.packb(msgpack.ExtType(5, b"x")), "ext type"),
    (msgpack.packb({"t": msgpack.Timestamp(1)}), "ext types"),
    (b"\xc1", "invalid MessagePack"),
    (msgpack.packb({"a": 1}) + b"\x01", "ExtraData"),
    (b"\x91" * 100 + b"\xc0", "deeper"),
])
def test_refuses_what_json_cannot_carry(value: bytes, why: str) -> None:
    with pytest.raises(BadMessagePack, match=why) as info:
        msgpack_codec.decode(value)
    assert info.value.code == "bad_msgpack" and info.value.close_code is None


def test_json_carries_bytes_as_base64_object() -> None:
    text = codec.encode({"data": b"\x00\x01"})
    assert text == '{"data":{"$bytes":"AAE="}}'
    assert codec.decode(text) == {"data": b"\x00\x01"}
    # not exactly the form: stays an object
    assert codec.decode('{"$bytes":"%%%"}') == {"$bytes": "%%%"}
    assert codec.decode('{"$bytes":"AAE=","x":1}') == {"$bytes": "AAE=", "x": 1}


def test_wire_formats_are_interned() -> None:
    d = deflater(6, 8, 15, 256, True)
    assert wire_format("json") is JSON_WIRE
    assert wire_format("msgpack", d) is wire_format("msgpack", deflater(6, 8, 15, 256, True))
    with pytest.raises(ValueError):
        wire_format("xml")


def test_frame_variants_build_each_format_once(monkeypatch: pytest.MonkeyPatch) -> None:
    text = codec.encode(MSG | {"data": "x" * 2000})
    variants = FrameVariants(text_frame(text))
    calls = {"packb": 0, "compress": 0}
    real_packb, real_compress = msgpack.packb, type(deflater(6, 8, 15, 256, True)).compress

    def packb(*a, **k):  # type: ignore[no-untyped-def]
        calls["packb"] += 1
        return real_packb(*a, **k)

    def compress(self, payload):  # type: ignore[no-untyped-def]
        calls["compress"] += 1
        return real_compress(self, payload)

    monkeypatch.setattr(msgpack, "packb", packb)
    monkeypatch.setattr(type(deflater(6, 8, 15, 256, True)), "compress", compress)
    d = deflater(6, 8, 15, 256, True)
    wires = [JSON_WIRE, wire_format("msgpack"), wire_format("json", d), wire_format("msgpack", d)]
    frames = [variants.get(w) for w in wires * 250]  # 1000 "subscribers"
    assert calls == {"packb": 1, "compress": 2}
    assert variants.built() == 4
    json_plain, mp_plain, json_z, mp_z = (parse_frames(frames[i])[0][0] for i in range(4))
    assert (json_plain.opcode, mp_plain.opcode) == (OP_TEXT, OP_BINARY)
    assert json_z.rsv1 and mp_z.rsv1 and not json_plain.rsv1
    inflate = zlib.decompressobj(-15)
    assert inflate.decompress(json_z.payload + b"\x00\x00\xff\xff") == text.encode()
    assert msgpack.unpackb(mp_plain.payload) == MSG | {"data": "x" * 2000}


def test_small_messages_stay_uncompressed_below_threshold() -> None:
    d = deflater(6, 8, 15, 256, True)
    frame = frame_for(wire_format("json", d), {"type": "pong"})
    assert not parse_frames(frame)[0][0].rsv1
    variants = FrameVariants(text_frame('{"type":"pong"}'))
    assert variants.get(wire_format("json", d)) is variants.get(JSON_WIRE)


def test_unshared_deflater_compresses_per_delivery() -> None:
    d = deflater(6, 8, 15, 0, False)
    variants = FrameVariants(text_frame(codec.encode({"data": "y" * 500})))
    w = wire_format("json", d)
    assert variants.get(w) == variants.get(w) and variants.built() == 1  # not cached

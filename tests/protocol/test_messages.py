"""The native protocol v1: parsing client messages, building server messages, the JSON codec."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_lab import errors
from realtime_lab.protocol import (
    PROTOCOL_VERSION,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    decode,
    encode,
    messages,
    parse_client_message,
)


@pytest.mark.parametrize(("obj", "expected"), [
    ({"type": "subscribe", "channel": "a", "id": 1}, Subscribe("a", 1)),
    ({"type": "subscribe", "channel": "a"}, Subscribe("a", None)),
    ({"type": "unsubscribe", "channel": "a", "id": "x"}, Unsubscribe("a", "x")),
    ({"type": "publish", "channel": "a", "data": None}, Publish("a", None, None)),
    ({"type": "publish", "channel": "a", "data": {"k": [1]}, "id": 2},
     Publish("a", {"k": [1]}, 2)),
    ({"type": "publish", "channel": "a", "data": 1, "priority": "high"},
     Publish("a", 1, None, "high")),
    ({"type": "ping", "id": 0}, Ping(0)),
    ({"type": "ping", "id": None}, Ping(None)),
    ({"type": "ping", "extra": "ignored"}, Ping(None)),
])
def test_parse_valid(obj: dict[str, Any], expected: object) -> None:
    assert parse_client_message(obj) == expected


@pytest.mark.parametrize(("obj", "error", "rid"), [
    ([], errors.NotAnObject, None),
    ("subscribe", errors.NotAnObject, None),
    (None, errors.NotAnObject, None),
    (3, errors.NotAnObject, None),
    ({}, errors.MissingField, None),
    ({"id": 4}, errors.MissingField, 4),
    ({"type": None, "id": 4}, errors.BadField, 4),
    ({"type": ["publish"]}, errors.BadField, None),
    ({"type": "shout", "id": "q"}, errors.UnknownType, "q"),
    ({"type": "Subscribe", "channel": "a"}, errors.UnknownType, None),
    ({"type": "subscribe", "id": 5}, errors.MissingField, 5),
    ({"type": "unsubscribe"}, errors.MissingField, None),
    ({"type": "publish", "data": 1}, errors.MissingField, None),
    ({"type": "publish", "channel": "a", "id": 6}, errors.MissingField, 6),
    ({"type": "publish", "channel": 1, "data": 1, "id": 7}, errors.BadField, 7),
    ({"type": "subscribe", "channel": None}, errors.BadField, None),
    ({"type": "publish", "channel": "a", "data": 1, "priority": "urgent", "id": 8},
     errors.BadField, 8),
    ({"type": "publish", "channel": "a", "data": 1, "priority": 1}, errors.BadField, None),
    ({"type": "ping", "id": True}, errors.BadField, None),
    ({"type": "ping", "id": 2.0}, errors.BadField, None),
    ({"type": "ping", "id": {"a": 1}}, errors.BadField, None),
])
def test_parse_invalid(obj: object, error: type[errors.ProtocolError], rid: object) -> None:
    with pytest.raises(error) as info:
        parse_client_message(obj)
    assert type(info.value) is error
    assert info.value.request_id == rid
    assert info.value.message == str(info.value) and info.value.message


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(errors.UnknownType, match="subscribe, unsubscribe, publish, ping"):
        parse_client_message({"type": "nope"})


def test_server_message_builders() -> None:
    assert messages.welcome_message("s1", "ada", 25.0, 20.0, {"max_subscriptions": 3}) == {
        "type": "welcome", "version": PROTOCOL_VERSION, "session": "s1", "user": "ada",
        "heartbeat": {"interval": 25.0, "timeout": 20.0}, "limits": {"max_subscriptions": 3},
        "receipts": {"max_samples": messages.MAX_RECEIPTS}}
    assert messages.subscribed_message("c", 1) == {"type": "subscribed", "channel": "c", "id": 1}
    assert messages.subscribed_message("c", None) == {"type": "subscribed", "channel": "c"}
    assert messages.unsubscribed_message("c", "z") == {
        "type": "unsubscribed", "channel": "c", "id": "z"}
    assert messages.published_message("c", 3, 10) == {
        "type": "published", "channel": "c", "recipients": 10, "id": 3}
    assert messages.channel_message("c", [1], "ada") == {
        "type": "message", "channel": "c", "data": [1], "from": "ada"}
    assert messages.channel_message("c", 1, None) == {"type": "message", "channel": "c", "data": 1}
    assert messages.pong_message(None) == {"type": "pong"}
    assert messages.pong_message(0) == {"type": "pong", "id": 0}
    assert messages.error_message("bad_json", "why") == {
        "type": "error", "code": "bad_json", "message": "why"}
    assert messages.error_message("x", "y", 9)["id"] == 9
    assert messages.presence_state_message("c", {"a": {"connections": 1}}) == {
        "type": "presence_state", "channel": "c", "members": {"a": {"connections": 1}}}
    assert messages.presence_diff_message("c", {"a": {}}, {"b": {}}) == {
        "type": "presence_diff", "channel": "c", "joins": {"a": {}}, "leaves": {"b": {}}}
    assert messages.heartbeat_message(5.0, 4.0) == {
        "type": "heartbeat", "interval": 5.0, "timeout": 4.0}


def test_protocol_version_is_1() -> None:
    assert PROTOCOL_VERSION == 1


# ---------------------------------------------------------------------------- codec


def test_encode_is_compact_utf8_json() -> None:
    text = encode({"type": "message", "data": {"t": "héllo ☃", "n": [1, 2]}})
    assert text == '{"type":"message","data":{"t":"héllo ☃","n":[1,2]}}'
    assert json.loads(text)["data"]["t"] == "héllo ☃"


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


def test_decode_roundtrip() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": {}}
    assert decode(encode(value)) == value
    assert decode("[1]") == [1]


@pytest.mark.parametrize("text", [
    "", "{", "{'a': 1}", '{"a": 1} x', "NaN", '{"x": NaN}', '{"x": Infinity}',
    '{"x": -Infinity}', "[" * 100_000,
])
def test_decode_errors_are_bad_json(text: str) -> None:
    with pytest.raises(errors.BadJSON) as info:
        decode(text)
    assert info.value.code == "bad_json"
    assert info.value.message.startswith("invalid JSON")


def test_bytes_travel_as_base64_objects() -> None:
    text = encode({"data": b"\x00\xffhi", "view": memoryview(b"ab"), "arr": bytearray(b"c")})
    assert json.loads(text) == {"data": {"$bytes": "AP9oaQ=="}, "view": {"$bytes": "YWI="},
                                "arr": {"$bytes": "Yw=="}}
    assert decode(text) == {"data": b"\x00\xffhi", "view": b"ab", "arr": b"c"}
    assert decode(text.encode()) == decode(text), "bytes input is UTF-8 JSON"


@pytest.mark.parametrize("obj", [
    {"$bytes": "not base64!"}, {"$bytes": 5}, {"$bytes": "AA==", "other": 1}])
def test_objects_that_are_not_bytes_stay_objects(obj: dict[str, Any]) -> None:
    assert decode(json.dumps(obj)) == obj


def test_encode_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="set"):
        encode({"x": {1, 2}})
    with pytest.raises(errors.BadJSON):
        decode(b"\xff\xfe")


def test_receipts_are_validated() -> None:
    msg = parse_client_message({"type": "receipts", "channel": "c", "latency_ms": [1, 2.5]})
    assert msg == messages.Receipts("c", (1.0, 2.5))
    too_many = [1.0] * (messages.MAX_RECEIPTS + 1)
    for bad in ([], too_many, [True], ["1"], [1e9], [-1e9], {"a": 1}, "1", None, [[1]]):
        with pytest.raises(errors.BadField, match="latency_ms"):
            parse_client_message({"type": "receipts", "channel": "c", "latency_ms": bad, "id": 4})
    with pytest.raises(errors.MissingField, match="latency_ms"):
        parse_client_message({"type": "receipts", "channel": "c"})
    with pytest.raises(errors.MissingField, match="channel"):
        parse_client_message({"type": "receipts", "latency_ms": [1]})

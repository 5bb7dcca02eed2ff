"""The data model (realtime_lab.protocol.values): what every wire format carries, and the
fast path that decides when a decoded JSON text must be walked."""

from __future__ import annotations

import collections
import datetime
import enum
import json
import math
import re
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_lab.errors import BadJSON, BadMessagePack, BadValue
from realtime_lab.protocol import codec, msgpack_codec
from realtime_lab.protocol.values import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    check_message,
    check_value,
    json_text_suspect,
)


def nest(levels: int, leaf: Any = 0) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


class Color(enum.IntEnum):
    RED = 1


ACCEPTED = [
    None, True, False, 0, INT_MIN, INT_MAX, -1.5, 1.7976931348623157e308, 5e-324, -0.0,
    "", "plain", "ñandú 😀 \u2028 \x00", b"\x00\xff", bytearray(b"x"),
    {"": 1, "ключ": [1, 2.5, None]}, (1, 2), Color.RED, collections.OrderedDict(a=1),
    nest(MAX_DEPTH),  # data sits at depth 1: its innermost array at depth 64
]


@pytest.mark.parametrize("value", ACCEPTED, ids=repr)
def test_values_every_format_carries(value: Any) -> None:
    check_value(value)
    payload = {"type": "message", "channel": "c", "data": value}
    codec.encode(payload).encode("utf-8")  # neither encoder refuses it
    msgpack_codec.encode(payload)


REFUSED = [
    (INT_MAX + 1, "data: the integer 18446744073709551616 is out of range"),
    (INT_MIN - 1, "out of range"),
    (10**400, "the integer of 1329 bits is out of range"),
    (math.inf, "data: inf is not a finite number"),
    (-math.inf, "-inf is not a finite number"),
    (math.nan, "nan is not a finite number"),
    ("a\ud800b", r"data: a string holds a lone surrogate \(U\+D800\)"),
    ({"ok": {"\udfff": 1}}, r"data.ok: key: a string holds a lone surrogate \(U\+DFFF\)"),
    ({1: "x"}, "object keys must be strings, not int"),
    ({None: "x"}, "object keys must be strings, not NoneType"),
    ({"items": [0, 1, {"x y": [math.nan]}]}, r"data.items\[2\]\['x y'\]\[0\]: nan"),
    (nest(MAX_DEPTH + 1), "nested deeper than 64 levels"),
    ({1, 2}, "set values are not part of the data model"),
    (datetime.date(2026, 1, 1), "date values are not part of the data model"),
    (object(), "object values"),
]


@pytest.mark.parametrize(("value", "why"), REFUSED, ids=lambda v: repr(v)[:30])
def test_values_outside_the_model(value: Any, why: str) -> None:
    with pytest.raises(BadValue, match=why) as info:
        check_value(value)
    err = info.value
    assert err.code == "bad_value" and err.close_code is None
    assert isinstance(err, ValueError)  # what Python callers of Hub.publish expect
    err.message.encode("utf-8")  # the message itself never holds a surrogate


def test_depth_counts_from_the_message() -> None:
    check_value({"m": nest(MAX_DEPTH - 3)}, depth=3)  # presence meta: 3 levels down
    with pytest.raises(BadValue, match=r"meta.m\[0\]\[0\].*\.\.\.: nested deeper"):
        check_value({"m": nest(MAX_DEPTH - 2)}, depth=3, what="meta")
    check_message({"type": "publish", "data": nest(MAX_DEPTH)})
    with pytest.raises(BadValue):
        check_message({"type": "publish", "data": nest(MAX_DEPTH + 1)})


def test_long_keys_are_cut_in_the_message() -> None:
    with pytest.raises(BadValue) as info:
        check_value({"k" * 1000 + " ": math.inf})
    assert len(info.value.message) < 200 and "..." in info.value.message


@pytest.mark.parametrize(("text", "rid"), [
    ('{"type":"publish","channel":"c","data":1e400,"id":7}', 7),
    ('{"type":"publish","channel":"c","data":1e400,"id":"r"}', "r"),
    ('{"type":"ping","id":"\\ud800"}', None),  # the id itself is bad: not echoed
    ('{"type":"ping","id":18446744073709551616}', None),
    ('[1e400]', None),
])
def test_json_decode_refuses_with_the_request_id(text: str, rid: Any) -> None:
    with pytest.raises(BadValue) as info:
        codec.decode(text)
    assert info.value.request_id == rid
    with pytest.raises(BadValue):
        codec.decode(text.encode())  # bytes take the same way


@pytest.mark.parametrize("text", [
    '{"a":"\\ud83d\\ude00"}',  # a valid surrogate pair escape is one character
    '{"a":1e300,"b":1.5E+308}',  # large but finite
    '{"a":9223372036854775807,"b":-9223372036854775808,"c":18446744073709551615}',
    '{"a":[' + "[]," * 70 + "[]]}",  # many brackets, little depth
])
def test_json_texts_that_look_suspect_but_are_fine(text: str) -> None:
    assert json_text_suspect(text)
    assert codec.decode(text) == json.loads(text)


def test_invalid_json_is_still_bad_json() -> None:
    with pytest.raises(BadJSON):
        codec.decode('{"a":NaN}')
    with pytest.raises(BadJSON):
        codec.decode(b'{"a":"\xff"}')


def test_msgpack_reports_values_as_bad_msgpack_with_the_id() -> None:
    with pytest.raises(BadMessagePack, match="data: nan") as info:
        msgpack_codec.decode(msgpack.packb({"type": "publish", "data": math.nan, "id": 4}))
    assert info.value.request_id == 4
    with pytest.raises(BadMessagePack, match="nested deeper"):
        msgpack_codec.decode(msgpack.packb({"data": nest(MAX_DEPTH + 1)}))


@pytest.mark.parametrize("text", [
    '{"type":"publish","channel":"c","data":{"text":"hello","n":42}}',
    '{"a":[1,2.5,-3,1e10,123456789012345678],"b":"ñ😀","c":{"d":null,"e":true}}',
    '{"t":1700000000000,"f":0.30000000000000004,"g":-1.5e-7,"h":"\\u00e9\\n"}',
    '{"a":1e-400,"b":-2.5E-999}',  # underflows to 0.0: finite
    '{"id":"123e4567-e89b-12d3-a456-426614174000","n":"12345678901234567890123"}',
    '{"sha":"3e9821a4f6b9c01d2e7f7e83e1e2a1ab2c3d4e5f","x":0.1234567890123456789012}',
])
def test_ordinary_texts_take_the_fast_path(text: str) -> None:
    assert not json_text_suspect(text)


# Soundness of the fast path: whenever the walk would refuse a value, the JSON text of
# that value makes json_text_suspect() true, however it is written.
json_scalars = (st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
                | st.integers(min_value=-(2**70), max_value=2**70) | st.text()
                | st.sampled_from(["\ud800", "x\udbff", "\udc00y", "\U0001f600"])
                | st.integers(min_value=INT_MAX - 3, max_value=INT_MAX + 3))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.just("\udc80"), children, max_size=4),
    max_leaves=30)


def deep(value: Any, levels: int) -> Any:
    return nest(levels, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, levels=st.integers(0, MAX_DEPTH + 3), ascii_only=st.booleans())
def test_fast_path_never_misses_a_value_outside_the_model(value: Any, levels: int,
                                                          ascii_only: bool) -> None:
    data = deep(value, levels)
    text = json.dumps({"data": data}, ensure_ascii=ascii_only)
    try:
        check_message(json.loads(text))
    except BadValue:
        assert json_text_suspect(text), text
        with pytest.raises(BadValue):
            codec.decode(text)
    else:
        assert codec.decode(text) == json.loads(text)


CONTEXTS = [('{"x":', "}"), ('{"x" : \t', "\n}"), ("[", "]"), ("[1,\r\n", "]"), ("", ""),
            (" ", " "), ('{"a":[{"b":-1},', "]}")]


@settings(max_examples=300, deadline=None)
@given(mantissa=st.integers(1, 10**30), exponent=st.integers(0, 500),
       sign=st.sampled_from(["", "-"]), marker=st.sampled_from(["e", "E", "e+", "E-", "e-"]),
       fraction=st.sampled_from(["", ".5", ".000"]), context=st.sampled_from(CONTEXTS))
def test_fast_path_catches_every_float_that_overflows(mantissa: int, exponent: int,
                                                       sign: str, marker: str,
                                                       fraction: str,
                                                       context: tuple[str, str]) -> None:
    text = f"{context[0]}{sign}{mantissa}{fraction}{marker}{exponent}{context[1]}"
    if not all(math.isfinite(v) for v in numbers_in(json.loads(text))):
        assert json_text_suspect(text), text
        with pytest.raises(BadValue):
            codec.decode(text)


@settings(max_examples=300, deadline=None)
@given(value=st.integers(min_value=-(10**40), max_value=10**40) | st.integers(),
       context=st.sampled_from(CONTEXTS))
def test_fast_path_catches_every_integer_out_of_range(value: int,
                                                      context: tuple[str, str]) -> None:
    text = f"{context[0]}{value}{context[1]}"
    if not INT_MIN <= value <= INT_MAX:
        assert json_text_suspect(text), text
        with pytest.raises(BadValue, match="out of range"):
            codec.decode(text)
    else:
        assert codec.decode(text) == json.loads(text)


def numbers_in(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers_in(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers_in(v)]
    return [value] if isinstance(value, int | float) else []


python_values = st.recursive(
    json_scalars | st.sampled_from([math.inf, -math.nan, Color.RED, bytearray(b"x"), {1, 2}])
    | st.integers(min_value=-(2**80), max_value=2**80),
    lambda children: st.lists(children, max_size=3) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=3) | st.integers(0, 3) | st.just("\ud9ff"), children,
                      max_size=3)
    | st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=3), children,
                                                         max_size=2)),
    max_leaves=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=python_values, levels=st.integers(0, MAX_DEPTH + 2))
def test_the_fast_check_and_the_explaining_walk_agree(value: Any, levels: int) -> None:
    """check_value decides with a fast walk and explains with a slower one: they agree."""
    from realtime_lab.protocol.values import _fits, _Outside, _walk

    value = nest(levels, value)
    try:
        _walk(value, 1, True)
        explained = None
    except _Outside as out:
        explained = out.reason
    assert _fits([value], 0, True) is (explained is None)
    if explained is None:
        check_value(value)
    else:
        with pytest.raises(BadValue, match=re.escape(explained)):
            check_value(value)

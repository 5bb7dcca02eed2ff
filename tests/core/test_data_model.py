"""Issue 13, point 2: every way a value enters the hub enforces the data model, before
anything is stored or delivered; input errors are counted, and the log stays bounded.

Socket-free: a hub with fake ports (realtime_lab.testing), JSON and msgpack subscribers.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.hooks import Hooks
from realtime_lab.errors import BadValue
from realtime_lab.protocol.wire import MSGPACK, wire_format
from realtime_lab.testing import ManualClock, RecordingPort

BAD_JSON_VALUES = ["18446744073709551616", "-9223372036854775809", "1e400", "-1E+999",
                   '"\\ud800"', '{"\\udbff": 1}', "[" * 70 + "]" * 70]
BAD_PY_VALUES = [2**64, -(2**63) - 1, math.inf, math.nan, "\ud800", {"\udfff": 1},
                 {1: "int key"}, {"deep": json.loads("[" * 70 + "]" * 70)}]


class Lab:
    """A hub, a channel "room" with a JSON and a msgpack subscriber, and a publisher."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("presence_channels", None)
        hooks = options.pop("hooks", None)
        self.clock = ManualClock(100.0)
        self.hub = Hub(ServerOptions(**options), clock=self.clock, hooks=hooks)
        self.text = self.open("text")
        self.binary = self.open("binary", binary=True)
        for s in (self.text, self.binary):
            self.hub.subscribe(s, "room")
        self.publisher = self.open("pub")
        self.take_all()

    def open(self, user: str, *, binary: bool = False) -> Session:
        port = RecordingPort(wire=wire_format(MSGPACK) if binary else wire_format())
        session = self.hub.open(port, user=user)
        port.take()  # the welcome
        return session  # type: ignore[no-any-return]

    def send(self, session: Session, text: str) -> list[dict[str, Any]]:
        self.hub.receive_text(session, text)
        return session.port.take()  # type: ignore[attr-defined, no-any-return]

    def take_all(self) -> list[list[dict[str, Any]]]:
        return [s.port.take() for s in (self.text, self.binary)]  # type: ignore[attr-defined]

    def delivery_works(self) -> None:
        """A good publish reaches both subscribers, and is the first message they get."""
        reply = self.send(self.publisher,
                          '{"type":"publish","channel":"room","data":"ok","id":"ok"}')
        assert reply == [{"type": "published", "channel": "room", "recipients": 2, "id": "ok"}]
        for got in self.take_all():
            assert [m["data"] for m in got if m["type"] == "message"] == ["ok"]


@pytest.mark.parametrize("data", BAD_JSON_VALUES)
def test_json_publish_is_refused_before_anyone_gets_it(data: str) -> None:
    lab = Lab()
    reply = lab.send(lab.publisher, f'{{"type":"publish","channel":"room","data":{data},"id":3}}')
    assert [(m["type"], m["code"], m["id"]) for m in reply] == [("error", "bad_value", 3)]
    assert lab.take_all() == [[], []]
    assert lab.hub.stats.internal_errors == 0
    lab.delivery_works()


def test_msgpack_publish_outside_the_model_is_bad_msgpack() -> None:
    lab = Lab()
    lab.hub.receive_binary(lab.binary, msgpack.packb(
        {"type": "publish", "channel": "room", "data": [math.inf], "id": 5}))
    [reply] = lab.binary.port.take()  # type: ignore[attr-defined]
    assert (reply["code"], reply["id"]) == ("bad_msgpack", 5) and "data[0]: inf" in reply["message"]
    assert lab.text.port.take() == []  # type: ignore[attr-defined]
    lab.delivery_works()


@pytest.mark.parametrize("value", BAD_PY_VALUES, ids=repr)
def test_server_side_publish_raises_a_clear_python_error(value: Any) -> None:
    lab = Lab()
    with pytest.raises(BadValue) as info:
        lab.hub.publish("room", {"payload": value})
    assert isinstance(info.value, ValueError) and info.value.message.startswith("data.payload")
    assert lab.take_all() == [[], []] and lab.hub.stats.published == 0
    lab.delivery_works()


@pytest.mark.parametrize("meta", ['{"n":18446744073709551616}', '{"f":1e400}',
                                  '{"s":"\\udc00"}', '{"\\ud800":1}'])
def test_presence_meta_is_checked_before_it_is_stored(meta: str) -> None:
    """Before: the meta was stored, and every later subscriber of the channel got
    internal_error instead of presence_state."""
    lab = Lab(presence_channels="*")
    member = lab.open("ada")
    lab.hub.subscribe(member, "room")
    member.port.take()  # type: ignore[attr-defined]
    reply = lab.send(member, f'{{"type":"presence","channel":"room","meta":{meta},"id":1}}')
    assert [(m["type"], m["code"]) for m in reply] == [("error", "bad_value")]
    assert lab.hub.presence("room")["ada"] == {"connections": 1}
    for binary in (False, True):
        late = lab.open(f"late-{binary}", binary=binary)
        got = lab.send(late, '{"type":"subscribe","channel":"room","id":2}')
        assert [m["type"] for m in got] == ["subscribed", "presence_state"], got
    assert lab.hub.stats.internal_errors == 0


def test_presence_meta_depth_counts_where_it_is_sent() -> None:
    """meta sits 3 levels down in presence_state: more than 61 levels inside it are refused,
    so no server message nests deeper than the 64 levels every client accepts."""
    lab = Lab(presence_channels="*")
    member = lab.open("ada")
    lab.hub.subscribe(member, "room")
    fits = json.dumps({"m": json.loads("[" * 61 + "]" * 61)})
    too_deep = json.dumps({"m": json.loads("[" * 62 + "]" * 62)})
    assert lab.hub.set_presence(member, "room", meta=json.loads(fits)) == ["meta"]
    with pytest.raises(BadValue, match="meta.m"):
        lab.hub.set_presence(member, "room", meta=json.loads(too_deep))


@pytest.mark.parametrize("value", BAD_PY_VALUES, ids=repr)
def test_server_side_presence_and_channel_metadata_raise(value: Any) -> None:
    lab = Lab(presence_channels="*")
    member = lab.open("ada")
    lab.hub.subscribe(member, "room")
    with pytest.raises(BadValue):
        lab.hub.set_member("room", "ada", meta={"v": value})
    with pytest.raises(BadValue):
        lab.hub.set_presence(member, "room", meta={"v": value})
    with pytest.raises(BadValue):
        lab.hub.update_presence(member, "room", {"v": value})
    assert lab.hub.presence("room")["ada"] == {"connections": 1}
    with pytest.raises(BadValue):
        lab.hub.set_channel_metadata("room", {"v": value})
    assert lab.hub.channel_info("room")["metadata"] == {}  # type: ignore[index]


def test_values_from_hooks_and_the_authorizer_are_checked_before_they_are_stored() -> None:
    def on_subscribe(session: Session, name: str) -> Any:
        return {"topic": math.inf} if name == "hooked" else None

    def authorizer(session: Session, name: str, auth: str | None) -> Any:
        return {"rank": 2**64}

    def on_message(session: Session, message: dict[str, Any]) -> Any:
        return {**message, "data": "\ud800"} if message.get("data") == "rewrite" else None

    lab = Lab(presence_channels="presence-*", authorizer=authorizer,
              hooks=Hooks(on_subscribe=on_subscribe, on_message=on_message))
    for name in ("hooked", "presence-x"):
        reply = lab.send(lab.publisher, json.dumps({"type": "subscribe", "channel": name,
                                                    "id": name}))
        assert [(m["type"], m["code"], m["id"]) for m in reply] == [("error", "bad_value", name)]
        assert name not in lab.hub.channels and name not in lab.publisher.subscriptions
    reply = lab.send(lab.publisher, '{"type":"publish","channel":"room","data":"rewrite"}')
    assert [m["code"] for m in reply] == ["bad_value"]
    assert lab.take_all() == [[], []] and lab.hub.stats.internal_errors == 0


def test_a_request_id_outside_the_model_is_not_echoed() -> None:
    """Before: the pong (and then the internal_error reply) could not be encoded, and the
    exception escaped Hub.receive_text."""
    lab = Lab()
    reply = lab.send(lab.publisher, '{"type":"ping","id":"\\ud800"}')
    assert [(m["code"], "id" in m) for m in reply] == [("bad_value", False)]


def test_bad_values_count_towards_the_error_limit() -> None:
    lab = Lab(error_limit=(20, 10.0))
    for i in range(20):
        lab.send(lab.publisher, f'{{"type":"publish","channel":"room","data":1e400,"id":{i}}}')
    assert lab.publisher.port.closes == [(4008, "too_many_errors")]  # type: ignore[attr-defined]


@pytest.fixture
def log_bytes() -> Iterator[io.StringIO]:
    """What the package logs at INFO and above, as the CLI would write it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("realtime_lab")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_2000_bad_publishes_write_a_bounded_log(log_bytes: io.StringIO) -> None:
    """Before: each one logged a 1.5 KB traceback (3 MB for 2000). Input errors are not
    logged above DEBUG; a server bug that input triggers is logged once a minute per kind."""
    lab = Lab(error_limit=None)
    for i in range(2000):
        data = BAD_JSON_VALUES[i % len(BAD_JSON_VALUES)]
        lab.send(lab.publisher, f'{{"type":"publish","channel":"room","data":{data}}}')
    assert lab.hub.stats.errors_sent == 2000 and lab.hub.stats.internal_errors == 0
    assert log_bytes.getvalue() == ""

    def buggy(ctx: Any, call_next: Any) -> Any:  # a middleware that fails on some input
        if ctx.message.get("data") == "boom":
            raise RuntimeError("bug in a middleware")
        return call_next(ctx)

    lab.hub.set_middleware([buggy])
    for _ in range(2000):
        reply = lab.send(lab.publisher, '{"type":"publish","channel":"room","data":"boom"}')
        assert [m["code"] for m in reply] == ["internal_error"]
    assert lab.hub.stats.internal_errors == 2000
    text = log_bytes.getvalue()
    assert text.count("Traceback") == 1 and len(text) < 4000, len(text)
    assert lab.hub.log_throttle.held_back("inbound_failed:RuntimeError") == 1999
    lab.clock.advance(60.0)  # next interval: one record that says how many were held back
    lab.send(lab.publisher, '{"type":"publish","channel":"room","data":"boom"}')
    assert "(1999 more like this in the last 60 s not logged)" in log_bytes.getvalue()

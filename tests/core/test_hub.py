"""Unit tests of the hub with fake connections, a fake clock and a manual scheduler (no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import ConnectionState, Hub, ServerOptions, Session
from realtime_lab.core import publish as broadcast_module
from realtime_lab.errors import BadChannel, MessageTooBig, TooManyErrors
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_TEXT, parse_frames
from realtime_lab.protocol.wire import JSON_WIRE
from realtime_lab.testing import ManualClock

# ---------------------------------------------------------------------------- fakes


class FakePort:
    """A ConnectionPort that records what the hub writes, pings and closes."""

    wire = JSON_WIRE

    def __init__(self, remote: str = "fake") -> None:
        self.remote = remote
        self.writes: list[bytes] = []
        self.pings = 0
        self.closes: list[tuple[int, str]] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def buffered_bytes(self) -> int:
        return self.buffered

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        pass  # the tests drain nothing

    def ping(self) -> None:
        self.pings += 1

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def abort(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        """Every message written so far, parsed from the raw bytes."""
        frames, rest = parse_frames(b"".join(self.writes))
        assert rest == b"", "a write ended in the middle of a frame"
        assert all(f.opcode == OP_TEXT and f.fin and not f.rsv1 for f in frames)
        return [json.loads(f.payload) for f in frames]

    def take(self) -> list[dict[str, Any]]:
        """Messages written since the last take()."""
        msgs = self.messages()
        self.writes.clear()
        return msgs


class ManualScheduler:
    """Collects the callbacks the hub schedules; ``run()`` plays the end of a loop turn."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()


class Harness:
    def __init__(self, options: ServerOptions | None = None) -> None:
        self.clock = ManualClock(1000.0)
        self.scheduler = ManualScheduler()
        self.hub = Hub(options or ServerOptions(), clock=self.clock, schedule=self.scheduler)

    def open(self, user: str | None = None, *, drain: bool = True) -> tuple[Session, FakePort]:
        port = FakePort(remote=f"fake-{len(self.hub.sessions)}")
        session = self.hub.open(port, user=user)
        if drain:
            self.flush()
            port.writes.clear()
        return session, port

    def flush(self) -> None:
        self.scheduler.run()

    def send(self, session: Session, message: dict[str, Any]) -> None:
        self.hub.receive_text(session, json.dumps(message))

    def subscribe(self, session: Session, port: FakePort, channel: str) -> list[dict[str, Any]]:
        self.send(session, {"type": "subscribe", "channel": channel})
        self.flush()
        return port.take()


@pytest.fixture
def h() -> Harness:
    return Harness()


def only_messages(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "message"]


# ---------------------------------------------------------------------------- lifecycle


def test_open_sends_welcome_with_session_heartbeat_and_limits() -> None:
    opts = ServerOptions(heartbeat_interval=7, heartbeat_timeout=3, max_subscriptions=9)
    h = Harness(opts)
    session, port = h.open(user="ada", drain=False)
    assert port.writes == [], "nothing is written before the end of the loop turn"
    h.flush()
    [welcome] = port.messages()
    assert welcome == {
        "type": "welcome", "version": 1, "session": session.id, "user": "ada",
        "heartbeat": {"interval": 7, "timeout": 3},
        "limits": {"max_message_bytes": 64 * 1024, "max_subscriptions": 9,
                   "max_channel_length": 128},
        "receipts": {"max_samples": 64},
    }
    assert session.state is ConnectionState.OPEN and session.is_open
    assert h.hub.sessions == {session.id: session}
    assert h.hub.stats.connections_opened == 1


def test_user_defaults_to_session_id(h: Harness) -> None:
    session, _ = h.open()
    assert session.user == session.id
    other, _ = h.open()
    assert other.id != session.id


def test_close_flushes_pending_then_closes_once(h: Harness) -> None:
    session, port = h.open()
    h.send(session, {"type": "ping", "id": 1})
    h.hub.close(session, 4004, "bye")
    assert port.messages() == [{"type": "pong", "id": 1}], "pending frames go out before close"
    assert port.closes == [(4004, "bye")]
    assert session.state is ConnectionState.CLOSING
    h.hub.close(session, 1000, "again")
    assert port.closes == [(4004, "bye")], "close is idempotent"
    # Nothing more is queued or written once closing.
    assert h.hub.send(session, {"type": "pong"}) is False
    h.send(session, {"type": "ping", "id": 2})
    h.flush()
    assert port.messages() == [{"type": "pong", "id": 1}]


def test_closed_drops_session_subscriptions_and_is_idempotent(h: Harness) -> None:
    a, pa = h.open("a")
    b, pb = h.open("b")
    h.subscribe(a, pa, "room")
    h.subscribe(b, pb, "room")
    pa.writes.clear()
    h.send(a, {"type": "ping"})  # leaves a pending frame that must be discarded
    h.hub.closed(a, 1006, "lost")
    assert a.state is ConnectionState.CLOSED
    assert a.close_code == 1006 and a.close_reason == "lost"
    assert a.pending == [] and a.pending_bytes == 0
    assert a.id not in h.hub.sessions
    assert list(h.hub.channels["room"].subscribers) == [b.id]
    h.hub.closed(a, 1000, "again")
    assert h.hub.stats.connections_closed == 1
    assert a.close_code == 1006
    h.hub.close(a, 1000, "late")  # no-op on a closed session
    assert pa.closes == []
    h.flush()
    assert pa.writes == [], "a closed session's pending frames are never written"
    h.hub.closed(b)
    assert h.hub.channels == {}, "the last subscriber leaving removes the channel"


def test_closed_keeps_the_server_close_code(h: Harness) -> None:
    s, port = h.open()
    h.hub.close(s, CloseCode.SLOW_CONSUMER, "slow")
    h.hub.closed(s, 1000, "client answer")
    assert s.close_code == CloseCode.SLOW_CONSUMER and s.close_reason == "slow"


def test_inbound_after_closed_is_ignored(h: Harness) -> None:
    s, port = h.open()
    h.hub.closed(s)
    h.send(s, {"type": "ping"})
    h.hub.receive_binary(s, b"\x00")
    h.flush()
    assert port.writes == [] and s.stats.errors == 0


def test_close_all_uses_going_away(h: Harness) -> None:
    ports = [h.open()[1] for _ in range(3)]
    h.hub.close_all()
    assert [p.closes for p in ports] == [[(1001, "server stopping")]] * 3


# ---------------------------------------------------------------------------- channels


def test_subscribe_replies_with_id_and_presence_state(h: Harness) -> None:
    s, port = h.open("ada")
    h.send(s, {"type": "subscribe", "channel": "room", "id": 1})
    h.flush()
    assert port.take() == [
        {"type": "subscribed", "channel": "room", "id": 1},
        {"type": "presence_state", "channel": "room", "members": {"ada": {"connections": 1}}},
    ]
    assert s.subscriptions == {"room"}
    assert h.hub.channel_list()[0]["subscribers"] == 1


def test_subscribe_twice_is_idempotent(h: Harness) -> None:
    s, port = h.open("ada")
    h.subscribe(s, port, "room")
    h.send(s, {"type": "subscribe", "channel": "room", "id": "again"})
    h.flush()
    assert port.take() == [{"type": "subscribed", "channel": "room", "id": "again"}]
    assert len(h.hub.channels["room"].subscribers) == 1
    assert h.hub.presence("room") == {"ada": {"connections": 1}}


def test_unsubscribe(h: Harness) -> None:
    s, port = h.open()
    h.subscribe(s, port, "room")
    h.send(s, {"type": "unsubscribe", "channel": "room", "id": 2})
    h.flush()
    assert port.take() == [{"type": "unsubscribed", "channel": "room", "id": 2}]
    assert s.subscriptions == set()
    assert "room" not in h.hub.channels
    h.hub.publish("room", "after")
    h.flush()
    assert port.writes == []


def test_unsubscribe_when_not_subscribed(h: Harness) -> None:
    s, port = h.open()
    h.send(s, {"type": "unsubscribe", "channel": "room", "id": 3})
    h.flush()
    [err] = port.take()
    assert err["type"] == "error" and err["code"] == "not_subscribed" and err["id"] == 3
    assert s.is_open


def test_publish_reaches_every_subscriber_with_sender(h: Harness) -> None:
    subs = [h.open(f"u{i}") for i in range(3)]
    for s, p in subs:
        h.subscribe(s, p, "room")
        p.writes.clear()
    for _, p in subs:
        p.writes.clear()
    pub, ppub = h.open("pub")
    h.send(pub, {"type": "publish", "channel": "room", "data": {"x": [1, "é"]}, "id": 9})
    h.flush()
    expected = {"type": "message", "channel": "room", "data": {"x": [1, "é"]}, "from": "pub"}
    for _, p in subs:
        assert only_messages(p.take()) == [expected]
    assert ppub.take() == [{"type": "published", "channel": "room", "recipients": 3, "id": 9}]
    assert h.hub.channels["room"].messages == 1
    assert h.hub.stats.published == 1 and h.hub.stats.deliveries >= 3


def test_publish_without_id_gets_no_reply_and_echoes_to_sender(h: Harness) -> None:
    s, port = h.open("ada")
    h.subscribe(s, port, "room")
    h.send(s, {"type": "publish", "channel": "room", "data": 1})
    h.flush()
    assert port.take() == [{"type": "message", "channel": "room", "data": 1, "from": "ada"}]


def test_echo_to_sender_off() -> None:
    h = Harness(ServerOptions(echo_to_sender=False))
    a, pa = h.open("a")
    b, pb = h.open("b")
    h.subscribe(a, pa, "room")
    h.subscribe(b, pb, "room")
    pa.writes.clear()
    h.send(a, {"type": "publish", "channel": "room", "data": 1, "id": 1})
    h.flush()
    assert pa.take() == [{"type": "published", "channel": "room", "recipients": 1, "id": 1}]
    assert only_messages(pb.take()) == [
        {"type": "message", "channel": "room", "data": 1, "from": "a"}]


def test_publish_to_empty_channel(h: Harness) -> None:
    s, port = h.open()
    h.send(s, {"type": "publish", "channel": "nobody", "data": None, "id": 1})
    h.flush()
    assert port.take() == [{"type": "published", "channel": "nobody", "recipients": 0, "id": 1}]
    assert "nobody" not in h.hub.channels
    assert h.hub.publish("nobody", 1) == 0


def test_server_side_publish_has_no_sender_and_validates(h: Harness) -> None:
    s, port = h.open()
    h.subscribe(s, port, "news")
    assert h.hub.publish("news", {"headline": "hi"}) == 1
    h.flush()
    assert port.take() == [{"type": "message", "channel": "news", "data": {"headline": "hi"}}]
    with pytest.raises(BadChannel):
        h.hub.publish("bad name", 1)


def test_publishing_unencodable_data_is_a_bad_request_not_a_crash(h: Harness) -> None:
    sub, psub = h.open()
    h.subscribe(sub, psub, "room")
    s, port = h.open()
    h.hub.receive_text(s, '{"type":"publish","channel":"room","data":NaN,"id":4}')
    h.flush()
    [err] = port.take()
    assert err["type"] == "error" and err["code"] == "bad_json" and s.is_open
    assert psub.writes == []


# ---------------------------------------------------------------------------- encode once


def test_broadcast_queues_the_same_bytes_object_to_every_subscriber(h: Harness) -> None:
    subs = [h.open() for _ in range(5)]
    for s, p in subs:
        h.subscribe(s, p, "room")
    h.flush()
    for s, p in subs:
        p.writes.clear()
        assert s.pending == []
    assert h.hub.publish("room", {"n": 1}) == 5
    frames = [s.pending[0] for s, _ in subs]
    assert all(len(s.pending) == 1 for s, _ in subs)
    assert all(f is frames[0] for f in frames), "one frame object shared by every subscriber"
    h.flush()
    assert all(p.writes == [frames[0]] and p.writes[0] is frames[0] for _, p in subs)


def test_broadcast_encodes_and_frames_once(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    subs = [h.open() for _ in range(20)]
    for s, p in subs:
        h.subscribe(s, p, "room")
    calls = {"encode": 0, "frame": 0}
    real_encode, real_frame = broadcast_module.codec.encode, broadcast_module.text_frame

    def counting_encode(message: dict[str, Any]) -> str:
        calls["encode"] += 1
        return real_encode(message)

    def counting_frame(text: str) -> bytes:
        calls["frame"] += 1
        return real_frame(text)

    monkeypatch.setattr(broadcast_module.codec, "encode", counting_encode)
    monkeypatch.setattr(broadcast_module, "text_frame", counting_frame)
    h.hub.publish("room", "x")
    assert calls == {"encode": 1, "frame": 1}


# ---------------------------------------------------------------------------- coalescing


def test_several_frames_in_one_turn_are_one_write(h: Harness) -> None:
    s, port = h.open()
    h.subscribe(s, port, "room")
    for i in range(5):
        h.hub.publish("room", i)
    h.send(s, {"type": "ping", "id": "p"})
    assert len(h.scheduler.callbacks) == 1, "one flush is scheduled per loop turn"
    assert s.pending_bytes == sum(len(f) for f in s.pending)
    h.flush()
    assert len(port.writes) == 1
    msgs = port.take()
    assert [m["data"] for m in only_messages(msgs)] == [0, 1, 2, 3, 4]
    assert msgs[-1] == {"type": "pong", "id": "p"}
    assert s.pending == [] and s.pending_bytes == 0
    assert s.stats.messages_out >= 6
    # The next turn schedules a new flush.
    h.hub.publish("room", 5)
    assert len(h.scheduler.callbacks) == 1


def test_default_scheduler_writes_at_once() -> None:
    hub = Hub(ServerOptions())
    port = FakePort()
    hub.open(port)
    assert [m["type"] for m in port.messages()] == ["welcome"]


# ---------------------------------------------------------------------------- presence


def test_presence_join_and_leave_diffs(h: Harness) -> None:
    a, pa = h.open("ada")
    b, pb = h.open("bob")
    h.subscribe(a, pa, "room")
    msgs = h.subscribe(b, pb, "room")
    assert msgs[1] == {"type": "presence_state", "channel": "room", "members": {
        "ada": {"connections": 1}, "bob": {"connections": 1}}}
    assert pa.take() == [{"type": "presence_diff", "channel": "room",
                          "joins": {"bob": {"connections": 1}}, "leaves": {}}]
    h.send(b, {"type": "unsubscribe", "channel": "room"})
    h.flush()
    assert pa.take() == [{"type": "presence_diff", "channel": "room", "joins": {},
                          "leaves": {"bob": {"connections": 0}}}]
    assert h.hub.presence("room") == {"ada": {"connections": 1}}
    assert h.hub.presence("nowhere") == {}


def test_presence_leave_when_connection_is_lost(h: Harness) -> None:
    a, pa = h.open("ada")
    b, pb = h.open("bob")
    h.subscribe(a, pa, "room")
    h.subscribe(b, pb, "room")
    pa.writes.clear()
    h.hub.closed(b, 1006)
    h.flush()
    assert pa.take() == [{"type": "presence_diff", "channel": "room", "joins": {},
                          "leaves": {"bob": {"connections": 0, "reason": "closed"}}}]


def test_user_with_two_connections_is_one_member(h: Harness) -> None:
    watcher, pw = h.open("watcher")
    h.subscribe(watcher, pw, "room")
    tab1, p1 = h.open("ada")
    tab2, p2 = h.open("ada")
    h.subscribe(tab1, p1, "room")
    assert len(pw.take()) == 1  # ada joined
    msgs = h.subscribe(tab2, p2, "room")
    assert msgs[1]["members"]["ada"] == {"connections": 2}
    # a second connection of a member is not a join: an update of its count
    assert pw.take() == [{"type": "presence_diff", "channel": "room",
                          "joins": {"ada": {"connections": 2}}, "leaves": {},
                          "changed": {"ada": ["connections"]}}]
    assert h.hub.presence("room")["ada"] == {"connections": 2}
    h.hub.closed(tab1)
    h.flush()
    # the member still has a connection: an update, not a leave
    assert pw.take() == [{"type": "presence_diff", "channel": "room",
                          "joins": {"ada": {"connections": 1}}, "leaves": {},
                          "changed": {"ada": ["connections"]}}]
    assert h.hub.presence("room")["ada"] == {"connections": 1}
    h.send(tab2, {"type": "unsubscribe", "channel": "room"})
    h.flush()
    assert pw.take() == [{"type": "presence_diff", "channel": "room", "joins": {},
                          "leaves": {"ada": {"connections": 0}}}]  # unsubscribe: no reason
    assert "ada" not in h.hub.presence("room")
    assert h.hub.channels["room"].describe()["members"] == 1


def test_presence_off_and_presence_glob() -> None:
    # channel_rules=(): "presence-*" is only a name here (no authorization), see test_authz
    h = Harness(ServerOptions(presence_channels="presence-*", channel_rules=()))
    a, pa = h.open("a")
    b, pb = h.open("b")
    assert [m["type"] for m in h.subscribe(a, pa, "plain")] == ["subscribed"]
    h.subscribe(b, pb, "plain")
    assert pa.take() == []
    assert [m["type"] for m in h.subscribe(a, pa, "presence-x")] == [
        "subscribed", "presence_state"]
    assert h.hub.channels["plain"].presence is False
    h2 = Harness(ServerOptions(presence_channels=None, channel_rules=()))
    c, pc = h2.open()
    assert [m["type"] for m in h2.subscribe(c, pc, "presence-x")] == ["subscribed"]


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["", "has space", "slash/no", "x" * 129, "tab\t", "é", "a\n"])
def test_invalid_channel_names_are_refused(h: Harness, name: str) -> None:
    s, port = h.open()
    for mtype in ("subscribe", "unsubscribe", "publish"):
        h.send(s, {"type": mtype, "channel": name, "data": 1, "id": mtype})
    h.flush()
    msgs = port.take()
    # unsubscribe of a never-subscribed channel may say not_subscribed; the others are bad_channel
    by_id = {m["id"]: m for m in msgs}
    assert by_id["subscribe"]["code"] == "bad_channel"
    assert by_id["publish"]["code"] == "bad_channel"
    assert by_id["unsubscribe"]["type"] == "error"
    assert s.is_open and s.subscriptions == set() and h.hub.channels == {}


@pytest.mark.parametrize("name", ["a", "x" * 128, "chat:room-1", "A_b=c@d,e.f;g"])
def test_valid_channel_names(h: Harness, name: str) -> None:
    s, port = h.open()
    msgs = h.subscribe(s, port, name)
    assert msgs[0] == {"type": "subscribed", "channel": name}


def test_custom_channel_pattern_and_length() -> None:
    h = Harness(ServerOptions(channel_pattern=r"room-\d+", max_channel_length=7))
    s, port = h.open()
    assert h.subscribe(s, port, "room-12")[0]["type"] == "subscribed"
    assert h.subscribe(s, port, "room-x")[0]["code"] == "bad_channel"
    err = h.subscribe(s, port, "room-123")[0]
    assert err["code"] == "bad_channel" and "limit is 7" in err["message"]


def test_max_subscriptions() -> None:
    h = Harness(ServerOptions(max_subscriptions=2))
    s, port = h.open()
    h.subscribe(s, port, "a")
    h.subscribe(s, port, "b")
    h.send(s, {"type": "subscribe", "channel": "c", "id": 5})
    h.flush()
    [err] = port.take()
    assert err["code"] == "too_many_subscriptions" and err["id"] == 5
    assert s.subscriptions == {"a", "b"} and "c" not in h.hub.channels
    assert h.subscribe(s, port, "a")[0]["type"] == "subscribed", "resubscribing is not a new one"
    h.send(s, {"type": "unsubscribe", "channel": "a"})
    assert h.subscribe(s, port, "c")[-2]["type"] == "subscribed"
    assert s.is_open


# ---------------------------------------------------------------------------- inbound errors


@pytest.mark.parametrize(("raw", "code", "rid"), [
    ("{not json", "bad_json", None),
    ("", "bad_json", None),
    ('{"type":"ping"} trailing', "bad_json", None),
    ("[1, 2]", "not_object", None),
    ('"text"', "not_object", None),
    ("null", "not_object", None),
    ('{"type":"dance","id":7}', "unknown_type", 7),
    ('{"channel":"a","id":1}', "missing_field", 1),
    ('{"type":"subscribe","id":2}', "missing_field", 2),
    ('{"type":"unsubscribe","id":2}', "missing_field", 2),
    ('{"type":"publish","channel":"a","id":3}', "missing_field", 3),
    ('{"type":5,"id":4}', "bad_field", 4),
    ('{"type":"subscribe","channel":5,"id":"s"}', "bad_field", "s"),
    ('{"type":"ping","id":true}', "bad_field", None),
    ('{"type":"ping","id":1.5}', "bad_field", None),
    ('{"type":"subscribe","channel":"no spaces","id":6}', "bad_channel", 6),
])
def test_bad_input_gets_an_error_and_the_connection_stays_open(
        h: Harness, raw: str, code: str, rid: object) -> None:
    s, port = h.open()
    h.hub.receive_text(s, raw)
    h.flush()
    [err] = port.take()
    assert err["type"] == "error" and err["code"] == code and err["message"]
    assert err.get("id") == rid
    assert s.is_open and port.closes == []
    assert s.stats.errors == 1 and h.hub.stats.errors_sent == 1
    h.send(s, {"type": "ping", "id": 1})
    h.flush()
    assert port.take() == [{"type": "pong", "id": 1}]


def test_binary_frames_are_refused(h: Harness) -> None:
    s, port = h.open()
    h.hub.receive_binary(s, b"\x01\x02")
    h.flush()
    [err] = port.take()
    assert err["code"] == "binary_not_supported" and s.is_open


def test_client_publish_off_is_forbidden() -> None:
    h = Harness(ServerOptions(client_publish=False))
    sub, psub = h.open()
    h.subscribe(sub, psub, "room")
    s, port = h.open()
    h.send(s, {"type": "publish", "channel": "room", "data": 1, "id": 8})
    h.flush()
    [err] = port.take()
    assert err["code"] == "forbidden" and err["id"] == 8 and s.is_open
    assert psub.writes == []
    assert h.hub.publish("room", "server may") == 1


@pytest.mark.parametrize(("err", "close_code"), [
    (MessageTooBig("too big"), 1009),
    (TooManyErrors("enough"), 4008),
])
def test_fatal_errors_close_with_their_code(h: Harness, err: Exception, close_code: int) -> None:
    s, port = h.open()
    h.hub.reject(s, err)  # type: ignore[arg-type]
    assert port.messages()[0]["code"] == err.code  # type: ignore[attr-defined]
    assert port.closes == [(close_code, err.code)]  # type: ignore[attr-defined]
    assert s.state is ConnectionState.CLOSING


def test_ping_and_stats(h: Harness) -> None:
    s, port = h.open()
    h.send(s, {"type": "ping", "id": "x"})
    h.send(s, {"type": "ping"})
    h.flush()
    assert port.take() == [{"type": "pong", "id": "x"}, {"type": "pong"}]
    assert s.stats.messages_in == 2 and h.hub.stats.messages_in == 2
    info = s.describe()
    assert info["session"] == s.id and info["state"] == "open" and info["remote"] == port.remote


# ---------------------------------------------------------------------------- heartbeat


def hb_harness() -> Harness:
    return Harness(ServerOptions(heartbeat_interval=10, heartbeat_timeout=5))


def test_heartbeat_pings_then_closes_with_4101() -> None:
    h = hb_harness()
    s, port = h.open()
    h.clock.advance(9.9)
    h.hub.heartbeat_tick()
    assert port.pings == 0
    h.clock.advance(0.1)
    h.hub.heartbeat_tick()
    assert port.pings == 1
    h.clock.advance(4.9)
    h.hub.heartbeat_tick()
    assert port.closes == [] and port.pings == 1
    h.clock.advance(0.1)
    h.hub.heartbeat_tick()
    assert port.closes == [(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")]
    assert h.hub.stats.heartbeat_timeouts == 1
    h.clock.advance(100)
    h.hub.heartbeat_tick()
    assert port.pings == 1 and len(port.closes) == 1, "a closing session is left alone"


def test_pong_keeps_the_connection_and_measures_rtt() -> None:
    h = hb_harness()
    s, port = h.open()
    for _ in range(5):
        h.clock.advance(10)
        h.hub.heartbeat_tick()
        h.clock.advance(0.25)
        h.hub.pong(s)
        h.clock.advance(4.75)
        h.hub.heartbeat_tick()
    assert port.pings == 5 and port.closes == []
    assert s.rtt == pytest.approx(0.25)


def test_any_message_after_a_ping_counts_as_alive_but_silence_later_still_times_out() -> None:
    h = hb_harness()
    s, port = h.open()
    h.clock.advance(10)
    h.hub.heartbeat_tick()
    assert port.pings == 1
    h.clock.advance(1)
    h.send(s, {"type": "ping"})  # traffic, but no pong
    h.clock.advance(5)
    h.hub.heartbeat_tick()
    assert port.closes == [], "the connection showed life after the ping"
    # Then it goes silent: it must be pinged again and closed when it does not answer.
    for _ in range(40):
        h.clock.advance(1)
        h.hub.heartbeat_tick()
        if port.closes:
            break
    assert port.pings == 2
    assert port.closes == [(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")]


def test_unsolicited_pong_is_harmless() -> None:
    h = hb_harness()
    s, port = h.open()
    h.hub.pong(s)
    assert s.rtt is None and s.last_seen == h.clock.now


# ---------------------------------------------------------------------------- slow consumer


def test_slow_consumer_closed_when_pending_bytes_exceed_the_limit() -> None:
    h = Harness(ServerOptions(max_outbound_bytes=2000))
    slow, pslow = h.open("slow")
    fast, pfast = h.open("fast")
    h.subscribe(slow, pslow, "room")
    h.subscribe(fast, pfast, "room")
    pslow.writes.clear()
    pfast.writes.clear()
    payload = "x" * 100
    sent = 0
    # Within one loop turn (no flush), pending grows until the limit is crossed.
    while slow.is_open:
        h.hub.publish("room", payload)
        sent += 1
        assert slow.pending_bytes <= 2000
        if fast.pending_bytes > 1500:  # the healthy one flushes in time
            h.hub.services.outbox.flush_session(fast)
        assert sent < 100
    assert pslow.closes == [(CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")]
    assert slow.pending == [] and slow.pending_bytes == 0
    assert h.hub.stats.slow_consumers == 1
    h.hub.publish("room", payload)
    h.flush()
    assert [m["data"] for m in only_messages(pfast.messages())] == [payload] * (sent + 1)
    assert fast.is_open and pfast.closes == []
    # what the slow one got before closing was written whole, and nothing after
    assert len(only_messages(pslow.messages())) == 0


def test_slow_consumer_closed_when_the_transport_buffer_is_full() -> None:
    h = Harness(ServerOptions(max_outbound_bytes=1000))
    s, port = h.open()
    h.subscribe(s, port, "room")
    port.buffered = 990  # the client stopped reading: the transport holds 990 bytes
    h.hub.send(s, {"type": "pong"})  # the hub learns the backlog from a write (its result)
    h.flush()
    port.take()
    h.hub.publish("room", "hello")
    h.flush()
    assert port.writes == [], "nothing more is written past the limit"
    assert port.closes[0][0] == CloseCode.SLOW_CONSUMER
    assert s.pending == [] and s.pending_bytes == 0


def test_transport_buffer_below_limit_is_fine() -> None:
    h = Harness(ServerOptions(max_outbound_bytes=1000))
    s, port = h.open()
    h.subscribe(s, port, "room")
    port.buffered = 900
    h.hub.publish("room", "hello")
    h.flush()
    assert only_messages(port.messages())[0]["data"] == "hello" and s.is_open


def test_views(h: Harness) -> None:
    for name in ("b", "a"):
        s, p = h.open()
        h.subscribe(s, p, name)
    listing = h.hub.channel_list()
    assert [c["name"] for c in listing] == ["a", "b"]
    assert set(listing[0]) == {"name", "subscribers", "members", "messages", "presence",
                               "presence_mode", "created_at"}

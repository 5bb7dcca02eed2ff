"""/app/{key} byte by byte: refusals, hostile input, the codec, signatures (no Node)."""

from __future__ import annotations

import json
from typing import Any

import pusher
import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.core.hub import Hub
from realtime_lab.protocol.frames import OP_BINARY, OP_TEXT
from realtime_lab.protocol.wire import FrameVariants, wire_format
from realtime_lab.pusher import PusherApp, authenticate, session_id_of, socket_id_of
from realtime_lab.pusher import protocol as pp
from realtime_lab.pusher.auth import channel_auth
from realtime_lab.testing.ports import RecordingPort

PATH = "/app/lab-key?protocol=7&client=js&version=8.6.0"


def _frames(data: bytes) -> list[dict[str, Any]]:
    """The Pusher messages in a run of unmasked server text frames."""
    out = []
    while data:
        assert data[0] == 0x80 | OP_TEXT
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        out.append(json.loads(data[start:start + length]))
        data = data[start + length:]
    return out


async def _established(ws: Any) -> str:
    hello = await ws.recv_json()
    assert hello["event"] == "pusher:connection_established"
    data = json.loads(hello["data"])
    assert data["activity_timeout"] >= 1
    return str(data["socket_id"])


# ---------------------------------------------------------------------- sans-I/O


def test_socket_ids_round_trip() -> None:
    assert socket_id_of("00000001ffffffff") == "1.4294967295"
    assert session_id_of("1.4294967295") == "00000001ffffffff"
    for bad in ("1.4294967296", "1", "a.b", "1.2.3", "", "12345678901.1"):
        assert session_id_of(bad) is None


def test_signatures_match_the_pusher_sdk(app: PusherApp) -> None:
    sdk = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret)
    assert sdk.authenticate(channel="private-x", socket_id="1234.5678") == \
        authenticate(app, "1234.5678", "private-x")
    member = {"user_id": "7", "user_info": {"name": "Ada"}}
    theirs = sdk.authenticate(channel="presence-x", socket_id="1.2", custom_data=member)
    ours = authenticate(app, "1.2", "presence-x", member)
    assert theirs["auth"] == channel_auth(app, "1.2", "presence-x", theirs["channel_data"])
    assert json.loads(ours["channel_data"]) == member


def test_codec_translates_once_per_broadcast() -> None:
    hub = Hub()
    wire = wire_format(pp.CODEC)
    message = {"type": "message", "channel": "presence-a", "data": {"n": 1},
               "from": "ada", "event": "client-x"}
    variants = FrameVariants(b"", message)
    frame = variants.get(wire)
    assert variants.get(wire) is frame  # built once, shared by every Pusher subscriber
    assert _frames(frame) == [{"event": "client-x", "channel": "presence-a",
                               "data": '{"n":1}', "user_id": "ada"}]
    diff = {"type": "presence_diff", "channel": "presence-a",
            "joins": {"bob": {"connections": 1, "meta": {"n": "B"}},
                      "ada": {"connections": 2}},
            "leaves": {"cy": {"connections": 0}}, "changed": {"ada": ["connections"]}}
    assert [(m["event"], json.loads(m["data"])) for m in _frames(pp.frames_for(diff))] == [
        ("pusher_internal:member_removed", {"user_id": "cy"}),
        ("pusher_internal:member_added", {"user_id": "bob", "user_info": {"n": "B"}})]
    assert pp.frames_for({**diff, "channel": "room"}) == b""  # not a Pusher presence channel
    for quiet in ({"type": "published", "channel": "a", "id": 1, "recipients": 2},
                  {"type": "unsubscribed", "channel": "a"}, {"type": "heartbeat"}):
        assert pp.frames_for(quiet) == b""
    assert hub.stats.internal_errors == 0


def test_a_pusher_session_of_a_fake_port_gets_pusher_frames() -> None:
    hub = Hub()
    port = RecordingPort(wire=wire_format(pp.CODEC))
    session = hub.open(port)
    established = _frames(b"".join(port.writes))[0]
    assert established["event"] == "pusher:connection_established"
    assert json.loads(established["data"])["socket_id"] == socket_id_of(session.id)


# ---------------------------------------------------------------------- over a socket


@pytest.mark.parametrize(("path", "code"), [
    ("/app/nope?protocol=7", pp.APP_NOT_FOUND),
    ("/app/lab-key", pp.NO_VERSION),
    ("/app/lab-key?protocol=x7", pp.BAD_VERSION),
    ("/app/lab-key?protocol=6", pp.UNSUPPORTED_VERSION),
])
async def test_refused_connections_get_pusher_error_then_the_code(
        server: LabServer, raw_ws: Any, path: str, code: int) -> None:
    ws = await raw_ws(server.port, path=path)
    err = await ws.recv_json()
    assert err["event"] == "pusher:error" and err["data"]["code"] == code
    assert await ws.read_close() == code
    assert not server.hub.sessions


HOSTILE: list[tuple[bytes, int]] = [
    (b"{not json", pp.GENERIC_ERROR),
    (b"[1,2]", pp.GENERIC_ERROR),
    (b'{"event": 5}', pp.GENERIC_ERROR),
    (b'{"event": "' + b"e" * 300 + b'"}', pp.GENERIC_ERROR),
    (b'{"event": "pusher:nonsense", "data": {}}', pp.GENERIC_ERROR),
    (b'{"event": "pusher:subscribe", "data": 3}', pp.GENERIC_ERROR),
    (b'{"event": "pusher:unsubscribe", "data": {}}', pp.GENERIC_ERROR),
    (b'{"event": "client-x", "channel": "private-a", "data": 1}', pp.GENERIC_ERROR),
    (b'{"event": "client-x", "data": 1}', pp.GENERIC_ERROR),
    (b'{"event": "plain", "channel": "a", "data": 1}', pp.GENERIC_ERROR),
    (b'{"event": "pusher:ping", "data": ' + b"[" * 200 + b"]" * 200 + b"}", pp.GENERIC_ERROR),
    (b'{"event": "pusher:ping", "data": 1e999}', pp.GENERIC_ERROR),
]


@pytest.mark.parametrize(("payload", "code"), HOSTILE)
async def test_hostile_messages_get_a_pusher_error_and_the_connection_lives(
        server: LabServer, raw_ws: Any, payload: bytes, code: int) -> None:
    ws = await raw_ws(server.port, path=PATH)
    await _established(ws)
    await ws.send_frame(OP_TEXT, payload)
    err = await ws.recv_json()
    assert err["event"] == "pusher:error", err
    assert err["data"]["code"] == code and err["data"]["message"]
    await ws.send_frame(OP_TEXT, b'{"event": "pusher:ping", "data": {}}')
    assert (await ws.recv_json())["event"] == "pusher:pong"
    assert server.hub.stats.internal_errors == 0


@pytest.mark.parametrize("channel", ["bad channel!", "c" * 500])
async def test_bad_channel_names_get_subscription_error(server: LabServer, raw_ws: Any,
                                                        channel: str) -> None:
    ws = await raw_ws(server.port, path=PATH)
    await _established(ws)
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe",
                                             "data": {"channel": channel}}).encode())
    err = await ws.recv_json()
    assert err["event"] == "pusher:subscription_error" and err["channel"] == channel
    assert json.loads(err["data"])["status"] == 400
    assert not server.hub.channels


async def test_binary_frames_are_refused(server: LabServer, raw_ws: Any) -> None:
    ws = await raw_ws(server.port, path=PATH)
    await _established(ws)
    await ws.send_frame(OP_BINARY, b"\x00\x01")
    err = await ws.recv_json()
    assert err["event"] == "pusher:error" and err["data"]["code"] == pp.GENERIC_ERROR


@pytest.mark.parametrize("data", [
    {"channel": "private-a"},
    {"channel": "private-a", "auth": "lab-key:00"},
    {"channel": "private-a", "auth": 7},
    {"channel": "presence-a", "auth": "lab-key:00"},
    {"channel": "presence-a", "auth": "lab-key:00", "channel_data": "{nope"},
])
async def test_bad_authorizations_get_subscription_error(server: LabServer, raw_ws: Any,
                                                         data: dict[str, Any]) -> None:
    ws = await raw_ws(server.port, path=PATH)
    await _established(ws)
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe",
                                             "data": data}).encode())
    err = await ws.recv_json()
    assert err["event"] == "pusher:subscription_error" and err["channel"] == data["channel"]
    body = json.loads(err["data"])
    assert body["status"] == 401 and body["type"] == "AuthError"
    assert not server.hub.channels.get(data["channel"])
    assert server.hub.stats.internal_errors == 0


async def test_presence_channel_data_is_checked(server: LabServer, raw_ws: Any,
                                                app: PusherApp) -> None:
    ws = await raw_ws(server.port, path=PATH)
    socket_id = await _established(ws)
    for channel_data in ('{"user_info": {}}', '{"user_id": ""}', '[1]',
                         json.dumps({"user_id": "u" * 200})):
        auth = channel_auth(app, socket_id, "presence-a", channel_data)
        await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
            "channel": "presence-a", "auth": auth, "channel_data": channel_data}}).encode())
        err = await ws.recv_json()
        assert err["event"] == "pusher:subscription_error", channel_data
    good = json.dumps({"user_id": 42, "user_info": {"name": "Ada"}})
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
        "channel": "presence-a", "auth": channel_auth(app, socket_id, "presence-a", good),
        "channel_data": good}}).encode())
    ok = await ws.recv_json()
    assert ok["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(ok["data"])["presence"] == {"ids": ["42"], "hash": {"42": {"name": "Ada"}},
                                                  "count": 1}
    # one connection is one user: another user_id in a second presence channel is refused
    other = json.dumps({"user_id": "43"})
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
        "channel": "presence-b", "auth": channel_auth(app, socket_id, "presence-b", other),
        "channel_data": other}}).encode())
    err = await ws.recv_json()
    assert err["event"] == "pusher:subscription_error" and err["channel"] == "presence-b"


async def test_client_events_can_be_disabled(raw_ws: Any) -> None:
    import realtime_lab

    app = PusherApp("9", "quiet", "s3cret", client_events=False)
    srv = await realtime_lab.serve(port=0, options=ServerOptions(pusher_apps=(app,)))
    try:
        ws = await raw_ws(srv.port, path="/app/quiet?protocol=7")
        socket_id = await _established(ws)
        await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
            "channel": "private-a", "auth": channel_auth(app, socket_id, "private-a")}}).encode())
        assert (await ws.recv_json())["event"] == "pusher_internal:subscription_succeeded"
        await ws.send_frame(OP_TEXT, b'{"event":"client-x","channel":"private-a","data":1}')
        err = await ws.recv_json()
        assert err["event"] == "pusher:error" and "not enabled" in err["data"]["message"]
    finally:
        await srv.stop()


def test_apps_are_checked() -> None:
    with pytest.raises(ValueError, match="three non-empty parts"):
        ServerOptions(pusher_apps=("1:key",))
    with pytest.raises(ValueError, match="app_id"):
        PusherApp("1 2", "k", "s")
    assert "s3cret" not in repr(PusherApp("1", "k", "s3cret"))
    with pytest.raises(ValueError, match="presence-"):
        LabServer(ServerOptions(pusher_apps=("1:k:s",), presence_channels="room-*"))


# ---------------------------------------------------------------------- the hub's path


async def _pusher_server(**options: Any) -> LabServer:
    import realtime_lab

    app = PusherApp("1001", "lab-key", "lab-secret")
    return await realtime_lab.serve(port=0, options=ServerOptions(pusher_apps=(app,)),
                                    **options)


async def test_hooks_middleware_error_limit_and_counters_apply(raw_ws: Any) -> None:
    from realtime_lab.core.hooks import Hooks
    from realtime_lab.middleware import RateLimit

    seen: list[str] = []

    def on_subscribe(session: Any, channel: str) -> bool:
        seen.append(channel)
        return channel != "vetoed"

    srv = await _pusher_server(hooks=Hooks(on_subscribe=on_subscribe),
                               middleware=[RateLimit(per_connection=(0.5, 5), per_ip=None)])
    try:
        stream = srv.events("channel.subscribed")
        ws = await raw_ws(srv.port, path=PATH)
        await _established(ws)
        await ws.send_frame(OP_TEXT, b'{"event":"pusher:subscribe","data":{"channel":"vetoed"}}')
        err = await ws.recv_json()
        assert err["event"] == "pusher:subscription_error" and err["channel"] == "vetoed"
        assert json.loads(err["data"])["status"] == 403
        await ws.send_frame(OP_TEXT, b'{"event":"pusher:subscribe","data":{"channel":"ok"}}')
        assert (await ws.recv_json())["event"] == "pusher_internal:subscription_succeeded"
        assert seen == ["vetoed", "ok"]
        event = await stream.get(timeout=5)
        assert event.channel == "ok"  # type: ignore[attr-defined]
        # the rate limit middleware: 5 messages of burst, then rate_limited -> 4301
        for _ in range(8):
            await ws.send_frame(OP_TEXT, b'{"event":"pusher:ping","data":{}}')
        codes = []
        while len(codes) < 8:
            msg = await ws.recv_json()
            codes.append(msg["data"]["code"] if msg["event"] == "pusher:error" else msg["event"])
        assert pp.CLIENT_EVENT_RATE in codes
        assert srv.hub.stats.messages_in >= 10
    finally:
        await srv.stop()


async def test_too_many_invalid_messages_close_with_4008(raw_ws: Any) -> None:
    srv = await _pusher_server()
    try:
        ws = await raw_ws(srv.port, path=PATH)
        await _established(ws)
        count, _window = srv.options.error_limit or (20, 10.0)
        for _ in range(count + 1):
            await ws.send_frame(OP_TEXT, b"{nope")
        assert await ws.read_close() == pp.TOO_MANY_ERRORS
        assert srv.hub.stats.internal_errors == 0
    finally:
        await srv.stop()


async def test_a_full_server_refuses_with_pusher_error_4100_and_backoff_close(
        raw_ws: Any) -> None:
    import realtime_lab

    app = PusherApp("1001", "lab-key", "lab-secret")
    srv = await realtime_lab.serve(port=0, options=ServerOptions(pusher_apps=(app,),
                                                                 max_connections=1))
    try:
        first = await raw_ws(srv.port, path=PATH)
        await _established(first)
        second = await raw_ws(srv.port, path=PATH)
        err = await second.recv_json()
        assert err["event"] == "pusher:error" and err["data"]["code"] == pp.OVER_CAPACITY
        assert 4100 <= await second.read_close() < 4200  # pusher-js backs off
    finally:
        await srv.stop()


async def test_a_member_joined_in_the_window_before_a_subscribe_reaches_it_once(
        raw_ws: Any) -> None:
    """ada joins, bob subscribes in the same presence batch window: bob's
    subscription_succeeded lists ada, and the window's diff does not add her again
    (it once did: member_added after the hash). A later join is a member_added."""
    import asyncio

    window = 3.0  # long: ada's join and bob's subscribe fall in one window when busy
    srv = await _pusher_server(presence_batch_window=window)
    app = srv.options.pusher_apps[0]
    batch = srv.hub.presence_batch

    async def join(user: str) -> tuple[Any, dict[str, Any]]:
        ws = await raw_ws(srv.port, path=PATH)
        socket_id = await _established(ws)
        data = json.dumps({"user_id": user})
        await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
            "channel": "presence-a", "auth": channel_auth(app, socket_id, "presence-a", data),
            "channel_data": data}}).encode())
        ok = await ws.recv_json()
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        return ws, json.loads(ok["data"])["presence"]

    async def window_ends() -> None:
        async with asyncio.timeout(window + 10):
            while batch.pending:
                await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout

    try:
        windows = batch.stats.windows
        ada, _ = await join("ada")
        bob, listed = await join("bob")
        assert batch.stats.windows == windows, "not one window: see the comment on window"
        assert listed["ids"] == ["ada", "bob"]
        await window_ends()
        added = await ada.recv_json()  # ada's list predates bob's join: she gets it
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"])["user_id"] == "bob"
        cy, _ = await join("cy")
        await window_ends()
        for ws in (bob, ada):  # bob's next frame is cy's join, not ada's again
            added = await ws.recv_json(timeout=10)
            assert added["event"] == "pusher_internal:member_added"
            assert json.loads(added["data"])["user_id"] == "cy"
    finally:
        await srv.stop()


def test_a_member_is_not_told_that_it_joined_itself() -> None:
    """Batched diffs (presence_batch_window) reach the joiner too; its Pusher frames
    leave its own join out, the others' frames keep it, each built per broadcast."""
    diff = {"type": "presence_diff", "channel": "presence-a",
            "joins": {"ada": {"connections": 1}, "bob": {"connections": 1}}, "leaves": {}}
    variants = FrameVariants(b"", diff)
    wire = wire_format(pp.CODEC)
    mine = [json.loads(m["data"])["user_id"] for m in _frames(variants.for_recipient(wire,
                                                                                    "ada"))]
    theirs = [json.loads(m["data"])["user_id"] for m in _frames(variants.for_recipient(wire,
                                                                                      "cy"))]
    assert mine == ["bob"] and theirs == ["ada", "bob"]
    assert pp.personal_frames({"type": "message", "channel": "presence-a"}, "ada") is None


def test_codec_gives_a_counts_channel_its_count() -> None:
    """A presence channel in counts mode (docs/presence.md): Pusher has no count event;
    each presence_count is the subscription's answer with the count and no member,
    and presence_mode (the channel left full mode) has no Pusher frame."""
    count = {"type": "presence_count", "channel": "presence-a", "count": 1234}
    (frame,) = _frames(pp.frames_for(count))
    assert frame["event"] == "pusher_internal:subscription_succeeded"
    assert frame["channel"] == "presence-a"
    assert json.loads(frame["data"]) == {"presence": {"ids": [], "hash": {}, "count": 1234}}
    mode = {"type": "presence_mode", "channel": "presence-a", "mode": "counts", "count": 5,
            "reason": "limit", "limit": 4}
    assert pp.frames_for(mode) == b""
    assert pp.frames_for({**count, "channel": "room"}) == b""  # not a Pusher presence channel

"""Real pusher-js (npm, run by Node) against the server's /app/{key}, beside native clients."""

from __future__ import annotations

from typing import Any

import realtime_lab
from realtime_lab import LabServer, sign_channel_token
from realtime_lab.pusher import PusherApp, session_id_of

PusherJs = Any  # tests/pusher/conftest.py


async def test_connects_and_gets_server_events_on_a_public_channel(
        server: LabServer, pusher_js: PusherJs) -> None:
    socket_id = await pusher_js.connect("a", server)
    assert session_id_of(socket_id) in server.hub.sessions
    pusher_js.send(op="subscribe", id="a", channel="news")
    await pusher_js.expect(id="a", kind="succeeded", channel="news")
    assert server.hub.publish("news", {"headline": "hi"}, event="breaking") == 1
    got = await pusher_js.expect(id="a", kind="event", event="breaking")
    assert got["data"] == {"headline": "hi"}
    server.hub.publish("news", "plain text")  # no event name: "message"
    got = await pusher_js.expect(id="a", kind="event", event="message")
    assert got["data"] == "plain text"


async def test_private_channel_needs_the_signature(server: LabServer,
                                                   pusher_js: PusherJs) -> None:
    await pusher_js.connect("ok", server, user="ada")
    await pusher_js.connect("no", server, user="deny")
    pusher_js.send(op="subscribe", id="ok", channel="private-room")
    await pusher_js.expect(id="ok", kind="succeeded", channel="private-room")
    pusher_js.send(op="subscribe", id="no", channel="private-room")
    err = await pusher_js.expect(id="no", kind="subscription_error", channel="private-room")
    assert err["error"]["status"] == 403  # the auth endpoint refused: pusher-js reports it
    assert server.channel_info("private-room")["subscribers"] == 1  # type: ignore[index]


async def test_presence_members_join_and_leave_and_client_events(
        server: LabServer, pusher_js: PusherJs) -> None:
    await pusher_js.connect("ada", server, user="ada")
    pusher_js.send(op="subscribe", id="ada", channel="presence-room", events=["client-typing"])
    first = await pusher_js.expect(id="ada", kind="succeeded", channel="presence-room")
    assert first["members"]["count"] == 1
    assert first["members"]["me"] == {"id": "ada", "info": {"name": "ada"}}

    await pusher_js.connect("bob", server, user="bob")
    pusher_js.send(op="subscribe", id="bob", channel="presence-room")
    second = await pusher_js.expect(id="bob", kind="succeeded", channel="presence-room")
    assert sorted(m["id"] for m in second["members"]["list"]) == ["ada", "bob"]
    added = await pusher_js.expect(id="ada", kind="member_added")
    assert added["member"] == {"id": "bob", "info": {"name": "bob"}}
    assert added["count"] == 2

    pusher_js.send(op="trigger", id="bob", channel="presence-room", event="client-typing",
                   data={"who": "bob"})
    got = await pusher_js.expect(id="ada", kind="bound", event="client-typing")
    assert got["data"] == {"who": "bob"} and got["user_id"] == "bob"
    assert not pusher_js.seen(id="bob", kind="event", event="client-typing")  # no echo

    pusher_js.send(op="unsubscribe", id="bob", channel="presence-room")
    removed = await pusher_js.expect(id="ada", kind="member_removed")
    assert removed["member"] == {"id": "bob"} and removed["count"] == 1


async def test_client_events_only_on_private_channels(server: LabServer,
                                                      pusher_js: PusherJs) -> None:
    await pusher_js.connect("a", server, user="ada")
    pusher_js.send(op="subscribe", id="a", channel="news")
    await pusher_js.expect(id="a", kind="succeeded", channel="news")
    pusher_js.send(op="trigger", id="a", channel="news", event="client-x", data={})
    err = await pusher_js.expect(id="a", kind="error")
    assert err["error"]["data"]["code"] == 4300
    assert "private and presence" in err["error"]["data"]["message"]


async def test_client_event_rate_limit_answers_4301(server: LabServer, pusher_js: PusherJs,
                                                    app: PusherApp) -> None:
    await pusher_js.connect("a", server, user="ada")
    pusher_js.send(op="subscribe", id="a", channel="private-fast")
    await pusher_js.expect(id="a", kind="succeeded", channel="private-fast")
    for i in range(int(app.client_event_rate) + 5):
        pusher_js.send(op="trigger", id="a", channel="private-fast", event="client-n", data=i)
    err = await pusher_js.expect(id="a", kind="error")
    assert err["error"]["data"]["code"] == 4301
    assert server.hub.sessions  # the connection stays open


async def test_native_client_and_pusher_js_share_a_presence_channel(
        server: LabServer, pusher_js: PusherJs) -> None:
    await pusher_js.connect("js", server, user="ada")
    pusher_js.send(op="subscribe", id="js", channel="presence-lobby", events=["client-hi"])
    await pusher_js.expect(id="js", kind="succeeded", channel="presence-lobby")

    native = await realtime_lab.connect(server.url, user="native-nia")
    try:
        assert native.session is not None
        secret = str(server.options.channel_secret)
        token = sign_channel_token(secret, native.session, "presence-lobby",
                                   member={"name": "Nia"})
        await native.subscribe("presence-lobby", auth=token)
        state = await native.recv(timeout=5)
        while state.get("type") != "presence_state":
            state = await native.recv(timeout=5)
        assert set(state["members"]) == {"ada", "native-nia"}
        assert state["members"]["ada"]["meta"] == {"name": "ada"}

        added = await pusher_js.expect(id="js", kind="member_added")
        assert added["member"] == {"id": "native-nia", "info": {"name": "Nia"}}

        # pusher-js -> native: a client event arrives as a message with its event name
        pusher_js.send(op="trigger", id="js", channel="presence-lobby", event="client-hi",
                       data={"text": "from pusher-js"})
        msg = await native.recv_message("presence-lobby", timeout=5)
        assert msg["data"] == {"text": "from pusher-js"}
        assert msg["event"] == "client-hi" and msg["from"] == "ada"

        # native -> pusher-js: a publish (with or without an event name)
        await native.send({"type": "publish", "channel": "presence-lobby",
                           "data": {"text": "from native"}, "event": "client-hi"})
        got = await pusher_js.expect(id="js", kind="bound", event="client-hi")
        assert got["data"] == {"text": "from native"} and got["user_id"] == "native-nia"
        await native.publish("presence-lobby", [1, 2, 3])
        got = await pusher_js.expect(id="js", kind="event", event="message")
        assert got["data"] == [1, 2, 3]
    finally:
        await native.close()
    removed = await pusher_js.expect(id="js", kind="member_removed")
    assert removed["member"] == {"id": "native-nia"}

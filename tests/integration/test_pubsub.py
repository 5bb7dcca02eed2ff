"""Subscribe, publish, unsubscribe and presence over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from realtime_lab import ConnectionClosed, LabServer, RequestFailed, ServerOptions
from realtime_lab.protocol import PROTOCOL_VERSION


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(max_subscriptions=5)


async def test_welcome(server: LabServer, connect) -> None:
    client = await connect(user="ada")
    welcome = client.welcome
    assert welcome["type"] == "welcome" and welcome["version"] == PROTOCOL_VERSION
    assert welcome["user"] == "ada" and welcome["session"] in server.hub.sessions
    assert welcome["limits"]["max_subscriptions"] == 5
    assert welcome["heartbeat"] == {"interval": 25.0, "timeout": 20.0}
    anonymous = await connect()
    assert anonymous.welcome["user"] == anonymous.welcome["session"]


async def test_subscribe_publish_unsubscribe(server: LabServer, connect) -> None:
    alice = await connect(user="alice")
    bob = await connect(user="bob")
    assert (await alice.subscribe("room"))["type"] == "subscribed"
    await bob.subscribe("room")
    reply = await bob.publish("room", {"text": "hi"}, ack=True)
    assert reply is not None and reply["recipients"] == 2
    for client in (alice, bob):
        msg = await client.recv_message("room", timeout=5)
        assert msg == {"type": "message", "channel": "room", "data": {"text": "hi"},
                       "from": "bob"}
    assert server.channels()[0]["subscribers"] == 2

    assert (await alice.unsubscribe("room"))["type"] == "unsubscribed"
    await bob.publish("room", "after", ack=True)
    assert (await bob.recv_message("room", timeout=5))["data"] == "after"
    # alice gets nothing more for the channel: a ping round trip proves the server is done
    await alice.ping()
    with pytest.raises(asyncio.TimeoutError):
        await alice.recv_message("room", timeout=0.2)
    assert server.hub.channels["room"].describe()["subscribers"] == 1


async def test_server_side_publish(server: LabServer, connect) -> None:
    client = await connect()
    await client.subscribe("news")
    assert server.publish("news", [1, 2]) == 1
    msg = await client.recv_message(timeout=5)
    assert msg == {"type": "message", "channel": "news", "data": [1, 2]}


async def test_request_errors_raise_request_failed(server: LabServer, connect) -> None:
    client = await connect()
    with pytest.raises(RequestFailed) as info:
        await client.subscribe("bad name")
    assert info.value.code == "bad_channel"
    with pytest.raises(RequestFailed) as info:
        await client.unsubscribe("never")
    assert info.value.code == "not_subscribed"
    for i in range(5):
        await client.subscribe(f"c{i}")
    with pytest.raises(RequestFailed) as info:
        await client.subscribe("one-too-many")
    assert info.value.code == "too_many_subscriptions"
    assert await client.ping() >= 0


#: Each presence change its own diff (no batch window): the tests below read the diffs
#: one by one (merged diffs: tests/integration/test_presence_batch.py).
AT_ONCE = pytest.mark.parametrize(
    "options", [ServerOptions(max_subscriptions=5, presence_batch_window=0)], ids=["at-once"])


@AT_ONCE
async def test_presence_join_and_leave(server: LabServer, connect) -> None:
    ada = await connect(user="ada")
    await ada.subscribe("lab")
    state = await ada.recv(timeout=5)
    assert state == {"type": "presence_state", "channel": "lab",
                     "members": {"ada": {"connections": 1}}}
    bob = await connect(user="bob")
    await bob.subscribe("lab")
    diff = await ada.recv(timeout=5)
    assert diff == {"type": "presence_diff", "channel": "lab",
                    "joins": {"bob": {"connections": 1}}, "leaves": {}}
    assert ada.presence.members("lab") == ["ada", "bob"]
    bob_state = await bob.recv(timeout=5)
    assert set(bob_state["members"]) == {"ada", "bob"}
    assert server.presence("lab") == {"ada": {"connections": 1}, "bob": {"connections": 1}}

    await bob.close()
    diff = await ada.recv(timeout=5)
    assert diff == {"type": "presence_diff", "channel": "lab", "joins": {},
                    "leaves": {"bob": {"connections": 0, "reason": "closed"}}}
    assert ada.presence.members("lab") == ["ada"]
    assert server.presence("lab") == {"ada": {"connections": 1}}


@AT_ONCE
async def test_two_tabs_are_one_member(server: LabServer, connect) -> None:
    watcher = await connect(user="w")
    await watcher.subscribe("lab")
    await watcher.recv(timeout=5)  # state
    tab1 = await connect(user="ada")
    tab2 = await connect(user="ada")
    await tab1.subscribe("lab")
    assert (await watcher.recv(timeout=5))["joins"] == {"ada": {"connections": 1}}
    await tab2.subscribe("lab")
    # the second tab is no join: an update of the member's connection count
    assert await watcher.recv(timeout=5) == {
        "type": "presence_diff", "channel": "lab", "joins": {"ada": {"connections": 2}},
        "leaves": {}, "changed": {"ada": ["connections"]}}
    assert server.presence("lab")["ada"] == {"connections": 2}
    assert watcher.presence.channels["lab"]["ada"] == {"connections": 2}
    await tab1.close()
    assert await watcher.recv(timeout=5) == {
        "type": "presence_diff", "channel": "lab", "joins": {"ada": {"connections": 1}},
        "leaves": {}, "changed": {"ada": ["connections"]}}
    await tab2.unsubscribe("lab")
    # one leave, after the last connection (an unsubscribe: no reason)
    diff = await watcher.recv(timeout=5)
    assert diff == {"type": "presence_diff", "channel": "lab", "joins": {},
                    "leaves": {"ada": {"connections": 0}}}
    assert "ada" not in server.presence("lab")
    assert watcher.presence.members("lab") == ["w"]


async def test_bad_user_id_is_refused(server: LabServer, connect) -> None:
    with pytest.raises(ConnectionClosed) as info:
        await connect(user="x" * 129)
    assert info.value.code == 4004
    assert server.hub.sessions == {}


async def test_client_iteration_ends_when_the_server_closes(server: LabServer, connect) -> None:
    client = await connect()
    await client.subscribe("feed")
    for i in range(3):
        server.publish("feed", i)
    received = []

    async def consume() -> None:
        async for msg in client:
            if msg["type"] == "message":
                received.append(msg["data"])
                if len(received) == 3:
                    server.hub.close_all(4200, "move")

    await asyncio.wait_for(consume(), 5)
    assert received == [0, 1, 2]
    assert await client.wait_closed(5) == 4200
    with pytest.raises(ConnectionClosed):
        await client.recv(timeout=1)
    with pytest.raises(ConnectionClosed):
        await client.publish("feed", 1)


async def test_full_inbox_still_ends_with_connection_closed(server: LabServer, connect,
                                                            wait_until) -> None:
    client = await connect(inbox_size=3)  # presence_state + two messages fill it
    await client.subscribe("feed")
    session = server.hub.sessions[client.session]
    server.publish("feed", 1)
    server.publish("feed", 2)
    await wait_until(lambda: client._inbox.full(), what="the inbox to fill")
    server.hub.close(session, 4200, "move")
    assert await client.wait_closed(10) == 4200  # the reader needs no room for a close
    got = [msg["data"] async for msg in _bounded(client, 5)]
    assert got == [1, 2], "both queued messages, then the end of the iteration"
    with pytest.raises(ConnectionClosed):
        await client.recv(timeout=1)


async def _bounded(client, timeout: float):  # type: ignore[no-untyped-def]
    """Iterate the client's messages, failing (not hanging) if the end never comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            msg = await client.recv(timeout=max(0.0, deadline - loop.time()))
        except ConnectionClosed:
            return
        if msg["type"] == "message":
            yield msg

"""Failure scenarios for the reconnecting client: restart, cut, half-open, buffering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import realtime_lab
from realtime_lab import Client, ConnectionClosed, ServerOptions
from realtime_lab.client import Backoff, ClientState, SendBufferFull, StateChange
from realtime_lab.testing import FaultProxy, RestartableServer

FAST = Backoff(initial=0.05, factor=2.0, max_delay=0.5)
# 5 s of silence before a connection counts as dead: these tests are about restarts,
# cuts and buffering, and a busy machine once starved the clients for 1.84 s, longer
# than the fast heartbeat of tests/client/conftest.py (0.2 + 0.3 s) allows
PATIENT = ServerOptions(heartbeat_interval=1.0, heartbeat_timeout=4.0)
# the half-open test needs the heartbeat to find the stall: 0.5 + 1.0 s
HALF_OPEN = ServerOptions(heartbeat_interval=0.5, heartbeat_timeout=1.0)


@pytest.fixture
def lab_options() -> ServerOptions:
    return PATIENT


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    await asyncio.gather(*(c.close() for c in made))


async def open_client(made: list[Client], url: str, user: str, **kwargs: object) -> Client:
    kwargs.setdefault("reconnect", True)
    kwargs.setdefault("backoff", FAST)
    client = await realtime_lab.connect(url, user=user, **kwargs)  # type: ignore[arg-type]
    made.append(client)
    return client


async def next_state(client: Client, state: ClientState, timeout: float = 5.0) -> StateChange:
    async def wait() -> StateChange:
        async for change in client.state_changes():
            if change.state is state:
                return change
        raise AssertionError(f"client closed before reaching {state}")
    return await asyncio.wait_for(wait(), timeout)


def subscriber_counts(lab: RestartableServer) -> dict[str, int]:
    return {str(c["name"]): int(c["subscribers"]) for c in lab.current.channels()}  # type: ignore[call-overload]


async def test_server_restart_same_port_resubscribes_once(
        lab: RestartableServer, clients: list[Client]) -> None:
    users = [await open_client(clients, lab.url, f"u{i}") for i in range(5)]
    for client in users:
        await client.subscribe("room")
        await client.subscribe(f"own-{client.user}")
    assert subscriber_counts(lab)["room"] == 5

    await lab.restart()
    await asyncio.gather(*(c.wait_open(10) for c in users))

    counts = subscriber_counts(lab)
    assert counts["room"] == 5  # each client exactly once: no duplicate subscription
    assert all(counts[f"own-{c.user}"] == 1 for c in users)
    assert sorted(lab.current.presence("room")) == sorted(c.user for c in users)  # type: ignore[type-var]
    lab.current.publish("room", {"after": "restart"})
    for client in users:
        msg = await client.recv_message("room", timeout=5)
        assert msg["data"] == {"after": "restart"}
        change = client.history[-1]
        assert change.state is ClientState.OPEN and change.reconnected
        assert change.downtime is not None and 0 < change.downtime < 10
        assert client.reconnects == 1
        assert any(h.state is ClientState.RECONNECTING and h.code == 1001 for h in client.history)
        everyone = sorted(c.user for c in users)  # type: ignore[type-var]
        async with asyncio.timeout(5):  # the last joins' diff may wait out its batch window
            while sorted(client.presence.members("room")) != everyone:
                await client.recv()


async def test_proxy_cut_reconnects_and_messages_flow(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    a = await open_client(clients, proxy.url(), "ada")
    b = await open_client(clients, proxy.url(), "bob")
    await a.subscribe("chat")
    await b.subscribe("chat")
    assert proxy.cut() == 2
    lost = await next_state(a, ClientState.RECONNECTING)
    assert lost.code is None and lost.attempt == 1 and lost.delay is not None
    await asyncio.gather(a.wait_open(5), b.wait_open(5))
    assert subscriber_counts(lab)["chat"] == 2
    await a.publish("chat", "hello again", ack=True)
    msg = await b.recv_message("chat", timeout=5)
    assert msg["data"] == "hello again" and msg["from"] == "ada"


@pytest.mark.parametrize("lab_options", [HALF_OPEN], ids=["half-open-heartbeat"])
async def test_half_open_detected_by_client_heartbeat(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    client = await open_client(clients, proxy.url(), "ada")
    await client.subscribe("room")
    beat = client.welcome["heartbeat"]
    limit = beat["interval"] + beat["timeout"]
    proxy.stall()
    started = time.monotonic()
    lost = await next_state(client, ClientState.RECONNECTING, timeout=limit * 4)
    detected = time.monotonic() - started
    assert "heartbeat timeout" in lost.reason
    # Silence is counted from the last frame heard, up to one ping interval before the
    # stall: about limit - interval to limit on a quiet machine. A ping delayed by a busy
    # machine makes it sooner, a starved client later: only a bound on a hang is asserted
    assert 0 < detected <= limit * 4, detected
    proxy.resume()
    await client.wait_open(5)
    lab.current.publish("room", 1)
    assert (await client.recv_message("room", timeout=5))["data"] == 1


async def test_messages_sent_while_reconnecting_are_buffered_then_refused(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    reader = await open_client(clients, lab.url, "reader")
    await reader.subscribe("news")
    writer = await open_client(clients, proxy.url(), "writer", buffer_size=3,
                               backoff=Backoff(initial=0.3, max_delay=0.3, jitter="none"))
    proxy.refuse = True
    proxy.cut()
    await next_state(writer, ClientState.RECONNECTING)
    for i in range(3):
        await writer.publish("news", i)
    with pytest.raises(SendBufferFull):
        await writer.publish("news", 3)
    assert writer.buffered == 3
    proxy.refuse = False
    await writer.wait_open(5)
    got = [(await reader.recv_message("news", timeout=5))["data"] for _ in range(3)]
    assert got == [0, 1, 2]
    assert writer.buffered == 0


async def test_request_while_reconnecting_waits_for_the_restore(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    client = await open_client(clients, proxy.url(), "ada",
                               backoff=Backoff(initial=0.2, max_delay=0.2, jitter="none"))
    proxy.cut()
    await next_state(client, ClientState.RECONNECTING)
    reply = await client.subscribe("late")  # buffered, sent after the reconnection
    assert reply["type"] == "subscribed"
    assert client.subscriptions == ["late"]
    assert subscriber_counts(lab)["late"] == 1


async def test_unsent_messages_are_reported_when_the_client_gives_up(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    client = await open_client(clients, proxy.url(), "ada", max_attempts=2,
                               backoff=Backoff(initial=0.05, max_delay=0.05, jitter="none"))
    proxy.refuse = True
    proxy.cut()
    await next_state(client, ClientState.RECONNECTING)
    await client.publish("room", "never")
    code = await client.wait_closed(5)
    assert code is None and client.state is ClientState.CLOSED
    assert "gave up after 2 attempts" in (client.close_reason or "")
    assert client.unsent == [{"type": "publish", "channel": "room", "data": "never"}]
    assert client.history[-1].unsent == 1
    assert proxy.accepted == 3  # the first connection and two attempts, no more


async def test_without_reconnect_the_client_ends_closed(lab: RestartableServer) -> None:
    client = await realtime_lab.connect(lab.url, user="ada")
    await lab.stop()
    assert await client.wait_closed(5) == 1001
    assert client.state is ClientState.CLOSED
    with pytest.raises(ConnectionClosed):
        await client.publish("room", 1)
    with pytest.raises(ConnectionClosed):
        await client.recv(1)


async def test_close_while_reconnecting_stops_for_good(
        lab: RestartableServer, proxy: FaultProxy, clients: list[Client]) -> None:
    client = await open_client(clients, proxy.url(), "ada",
                               backoff=Backoff(initial=5, max_delay=5, jitter="none"))
    proxy.cut()
    await next_state(client, ClientState.RECONNECTING)
    accepted = proxy.accepted
    await asyncio.wait_for(client.close(), 2)
    assert client.state is ClientState.CLOSED
    await asyncio.sleep(0.1)
    assert proxy.accepted == accepted


async def test_connect_retries_until_the_server_is_up(lab: RestartableServer) -> None:
    await lab.stop()
    client = Client(lab.url, user="early", reconnect=True, backoff=FAST)
    seen: list[StateChange] = []
    client.on_state(seen.append)
    connecting = asyncio.create_task(client.connect(timeout=2))
    while not any(c.state is ClientState.RECONNECTING for c in seen):
        await asyncio.sleep(0.01)
    await lab.start()
    await asyncio.wait_for(connecting, 10)
    assert client.state is ClientState.OPEN
    assert [c.state for c in seen][:3] == [ClientState.CONNECTING, ClientState.RECONNECTING,
                                          ClientState.CONNECTING]
    await client.close()


async def test_connect_without_reconnect_raises_the_connection_error(
        lab: RestartableServer) -> None:
    await lab.stop()
    with pytest.raises(OSError):
        await realtime_lab.connect(lab.url, timeout=2)


async def test_presence_state_and_meta_are_restored_after_a_restart(
        lab: RestartableServer, clients: list[Client]) -> None:
    ada = await open_client(clients, lab.url, "ada")
    await ada.subscribe("room")
    await ada.set_presence("room", state="away", meta={"desk": 7})
    await ada.set_presence("room", meta={"desk": 8})  # later changes win, state is kept
    assert lab.current.presence("room")["ada"]["meta"] == {"desk": 8}

    await lab.restart()  # a new server process state: it knows nothing of ada
    await ada.wait_open(10)

    member = lab.current.presence("room")["ada"]
    assert (member["state"], member["meta"]) == ("away", {"desk": 8})
    await ada.unsubscribe("room")
    await ada.subscribe("room")
    fresh = lab.current.presence("room")["ada"]
    assert fresh.get("state", "online") == "online" and not fresh.get("meta"), (
        "what was set is forgotten on unsubscribe")

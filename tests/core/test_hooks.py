"""Hooks: every outcome (accept, reject, modify, drop, refuse, veto, fail, time out)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.hooks import ConnectRequest, Hooks, Refuse
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.testing import RecordingPort


def hub_with(**hooks: Any) -> Hub:
    return Hub(ServerOptions(), hooks=Hooks(timeout=0.05, **hooks))  # flush at once


async def settle(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) or hasattr(result, "__await__") else result


def sync_and_async(fn: Any) -> list[Any]:
    async def afn(*args: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args)
    return [fn, afn]


async def open_session(hub: Hub, user: str | None = None) -> tuple[Session, RecordingPort]:
    port = RecordingPort("10.0.0.9")
    session = await settle(hub.open(port, user=user,
                                    request=ConnectRequest(remote=port.remote, user=user)))
    return session, port


async def send(hub: Hub, s: Session, msg: dict[str, Any]) -> None:
    await settle(hub.receive_text(s, json.dumps(msg)))


# ---------------------------------------------------------------------------- on_connect


@pytest.mark.parametrize("hook", sync_and_async(lambda req: {"user": "u-" + req.remote,
                                                             "metadata": {"plan": "pro"}}))
async def test_on_connect_attaches_user_and_metadata(hook: Any) -> None:
    hub = hub_with(on_connect=hook)
    s, port = await open_session(hub)
    assert s.is_open and s.user == "u-10.0.0.9" and s.metadata == {"plan": "pro"}
    assert port.take()[0]["user"] == "u-10.0.0.9"


@pytest.mark.parametrize(("hook", "code", "reason"), [
    (lambda req: False, CloseCode.CONNECT_REFUSED, "connect_refused"),
    (lambda req: Refuse(4010, "banned"), 4010, "connect_refused"),
    (lambda req: 1 / 0, CloseCode.CONNECT_REFUSED, "hook_failed"),
])
async def test_on_connect_refusals(hook: Any, code: int, reason: str) -> None:
    for fn in sync_and_async(hook):
        hub = hub_with(on_connect=fn)
        seen: list[Any] = []
        hub.bus.subscribe(seen.append, "connection.refused")
        s, port = await open_session(hub)
        assert not s.is_open and port.closes == [(code, reason)]
        assert port.take()[0]["code"] == reason
        assert hub.sessions == {} and hub.admission.total == 0
        assert seen[0].code == code and seen[0].reason == reason
        hub.closed(s)  # the transport reports it; nothing to undo
        assert hub.stats.connections_closed == 0


async def test_on_connect_timeout_refuses() -> None:
    async def slow(req: ConnectRequest) -> None:
        await asyncio.sleep(1)

    hub = hub_with(on_connect=slow)
    s, port = await open_session(hub)
    assert port.closes == [(CloseCode.CONNECT_REFUSED, "hook_timeout")]


# ---------------------------------------------------------------------------- on_message


def modify(session: Session, msg: dict[str, Any]) -> Any:
    if msg.get("type") == "publish":
        return {**msg, "data": {"clean": msg["data"]}}
    return None


@pytest.mark.parametrize("hook", sync_and_async(modify))
async def test_on_message_modifies(hook: Any) -> None:
    hub = hub_with(on_message=hook)
    s, port = await open_session(hub)
    await send(hub, s, {"type": "subscribe", "channel": "room"})
    await send(hub, s, {"type": "publish", "channel": "room", "data": "raw"})
    msgs = [m for m in port.take() if m["type"] == "message"]
    assert msgs[0]["data"] == {"clean": "raw"}


@pytest.mark.parametrize("hook", sync_and_async(
    lambda s, m: False if m.get("data") == "spam" else None))
async def test_on_message_drops(hook: Any) -> None:
    hub = hub_with(on_message=hook)
    dropped: list[Any] = []
    hub.bus.subscribe(dropped.append, "message.dropped")
    s, port = await open_session(hub)
    await send(hub, s, {"type": "subscribe", "channel": "room"})
    await send(hub, s, {"type": "publish", "channel": "room", "data": "spam"})
    await send(hub, s, {"type": "publish", "channel": "room", "data": "spam", "id": 4})
    await send(hub, s, {"type": "publish", "channel": "room", "data": "ok"})
    msgs = port.take()
    assert [m["data"] for m in msgs if m["type"] == "message"] == ["ok"]
    assert [(m["code"], m["id"]) for m in msgs if m["type"] == "error"] == [
        ("message_refused", 4)]
    assert [d.reason for d in dropped] == ["hook", "hook"]


@pytest.mark.parametrize("hook", sync_and_async(lambda s, m: 1 / 0))
async def test_on_message_failure_is_an_error_not_a_crash(hook: Any) -> None:
    hub = hub_with(on_message=hook)
    s, port = await open_session(hub)
    await send(hub, s, {"type": "ping", "id": 1})
    assert port.take()[-1] == {"type": "error", "code": "hook_failed", "id": 1,
                               "message": "on_message failed: ZeroDivisionError"}
    assert s.is_open


async def test_async_hooks_keep_message_order() -> None:
    delays = iter([0.03, 0.0, 0.01])

    async def jittery(session: Session, msg: dict[str, Any]) -> None:
        await asyncio.sleep(next(delays, 0))

    hub = hub_with(on_message=jittery)
    hub.hooks = Hooks(on_message=jittery, timeout=1)
    s, port = await open_session(hub)
    await send(hub, s, {"type": "subscribe", "channel": "room"})
    for i in range(3):  # the transport awaits each before reading the next
        await send(hub, s, {"type": "publish", "channel": "room", "data": i})
    assert [m["data"] for m in port.take() if m["type"] == "message"] == [0, 1, 2]


# ---------------------------------------------------------------------------- channels


@pytest.mark.parametrize("hook", sync_and_async(
    lambda s, ch: Refuse("private_channel", "members only") if ch.startswith("private")
    else {"topic": ch.upper()}))
async def test_on_subscribe_refuses_or_attaches_metadata(hook: Any) -> None:
    hub = hub_with(on_subscribe=hook)
    s, port = await open_session(hub)
    port.take()
    await send(hub, s, {"type": "subscribe", "channel": "private-1", "id": 1})
    await send(hub, s, {"type": "subscribe", "channel": "news", "id": 2})
    msgs = port.take()
    assert msgs[0] == {"type": "error", "code": "private_channel", "message": "members only",
                       "id": 1}
    assert msgs[1] == {"type": "subscribed", "channel": "news", "id": 2,
                       "meta": {"topic": "NEWS"}}
    assert s.subscriptions == {"news"} and hub.channels["news"].metadata == {"topic": "NEWS"}


@pytest.mark.parametrize("hook", sync_and_async(lambda s, ch: ch != "locked"))
async def test_on_unsubscribe_refuses(hook: Any) -> None:
    hub = hub_with(on_unsubscribe=hook)
    s, port = await open_session(hub)
    for ch in ("locked", "free"):
        await send(hub, s, {"type": "subscribe", "channel": ch})
    port.take()
    await send(hub, s, {"type": "unsubscribe", "channel": "locked", "id": 1})
    await send(hub, s, {"type": "unsubscribe", "channel": "free", "id": 2})
    msgs = port.take()
    assert msgs[0]["code"] == "unsubscribe_refused" and msgs[0]["id"] == 1
    assert msgs[1] == {"type": "unsubscribed", "channel": "free", "id": 2}
    assert s.subscriptions == {"locked"}


async def test_on_subscribe_timeout_refuses_with_hook_timeout() -> None:
    async def slow(s: Session, ch: str) -> None:
        await asyncio.sleep(1)

    hub = hub_with(on_subscribe=slow)
    s, port = await open_session(hub)
    port.take()
    await send(hub, s, {"type": "subscribe", "channel": "room", "id": 9})
    assert port.take() == [{"type": "error", "code": "hook_timeout", "id": 9,
                            "message": "on_subscribe took longer than 0.05s"}]
    assert s.subscriptions == set() and s.is_open


# ---------------------------------------------------------------------------- presence


def presence(session: Session, channel: str, change: dict[str, Any]) -> Any:
    if session.user == "ghost":
        return False
    if change["event"] == "update" and change["meta"].get("status") == "invisible":
        return False
    return {**change["meta"], "role": "member"}


@pytest.mark.parametrize("hook", sync_and_async(presence))
async def test_on_presence_modifies_and_vetoes(hook: Any) -> None:
    hub = hub_with(on_presence=hook)
    events: list[Any] = []
    hub.bus.subscribe(events.append, "presence.*")
    ada, pada = await open_session(hub, "ada")
    ghost, _ = await open_session(hub, "ghost")
    await send(hub, ada, {"type": "subscribe", "channel": "room"})
    await send(hub, ghost, {"type": "subscribe", "channel": "room"})
    assert hub.presence("room") == {"ada": {"connections": 1, "meta": {"role": "member"}}}
    assert await settle(hub.update_presence(ada, "room", {"status": "away"})) is True
    assert await settle(hub.update_presence(ada, "room", {"status": "invisible"})) is False
    assert hub.presence("room")["ada"]["meta"] == {"status": "away", "role": "member"}
    assert [(x.type, x.user) for x in events] == [("presence.join", "ada"),
                                                  ("presence.update", "ada")]
    hub.closed(ghost)
    assert [x.type for x in events][-1] == "presence.update", "a vetoed member never leaves"


async def test_presence_hook_failure_vetoes_but_subscribes() -> None:
    hub = hub_with(on_presence=lambda *a: 1 / 0)
    s, port = await open_session(hub, "ada")
    await send(hub, s, {"type": "subscribe", "channel": "room", "id": 1})
    assert s.subscriptions == {"room"} and hub.presence("room") == {}


def presence_rules(session: Session, channel: str, change: dict[str, Any]) -> Any:
    """Busy is refused with a code, "dnd" vetoed, and metadata always gets a role."""
    if change["event"] == "update" and change["state"] == "busy":
        return Refuse("no_busy_here", "busy is not allowed in this room")
    if change["meta"].get("status") == "dnd":
        return False
    return {**change["meta"], "role": "member"}


async def presence_pair(hook: Any) -> tuple[Hub, Session, RecordingPort, RecordingPort,
                                            list[Any], list[dict[str, Any]]]:
    """A hub with ``on_presence=hook``: ada and a watcher in "room"; events and hook calls."""
    calls: list[dict[str, Any]] = []

    def spy(session: Session, channel: str, change: dict[str, Any]) -> Any:
        calls.append(change)
        return hook(session, channel, change)

    async def aspy(session: Session, channel: str, change: dict[str, Any]) -> Any:
        result = spy(session, channel, change)
        return await result if asyncio.iscoroutine(result) else result

    hub = hub_with(on_presence=aspy if asyncio.iscoroutinefunction(hook) else spy)
    ada, pada = await open_session(hub, "ada")
    watcher, pw = await open_session(hub, "w")
    await send(hub, watcher, {"type": "subscribe", "channel": "room"})
    await send(hub, ada, {"type": "subscribe", "channel": "room"})
    pada.take()
    pw.take()
    calls.clear()
    events: list[Any] = []
    hub.bus.subscribe(events.append, "presence.*")
    return hub, ada, pada, pw, events, calls


@pytest.mark.parametrize("hook", sync_and_async(presence_rules))
async def test_presence_message_runs_on_presence_and_its_dict_replaces_meta(hook: Any) -> None:
    hub, ada, pada, pw, events, calls = await presence_pair(hook)
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "away",
                          "meta": {"status": "lunch"}, "id": 1})
    assert calls == [{"event": "update", "state": "away", "meta": {"status": "lunch"},
                      "changed": ["state", "meta"]}]
    info = {"connections": 1, "state": "away", "meta": {"status": "lunch", "role": "member"}}
    assert hub.presence("room")["ada"] == info
    diff = {"type": "presence_diff", "channel": "room", "joins": {"ada": info}, "leaves": {},
            "changed": {"ada": ["state", "meta"]}}
    assert pw.take() == [diff]
    assert pada.take() == [diff, {"type": "presence", "channel": "room", "id": 1,
                                  "changed": ["state", "meta"]}]
    assert [(e.type, e.state, e.meta) for e in events] == [
        ("presence.update", "away", {"status": "lunch", "role": "member"})]
    # a state-only change: the hook sees the current metadata, which it keeps
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "online", "id": 2})
    assert calls[-1] == {"event": "update", "state": "online",
                         "meta": {"status": "lunch", "role": "member"}, "changed": ["state"]}
    assert pada.take()[-1]["changed"] == ["state"]


@pytest.mark.parametrize("hook", sync_and_async(presence_rules))
async def test_presence_message_veto_is_an_error_and_the_connection_stays_usable(
        hook: Any) -> None:
    hub, ada, pada, pw, events, calls = await presence_pair(hook)
    before = hub.presence("room")["ada"]
    await send(hub, ada, {"type": "presence", "channel": "room", "meta": {"status": "dnd"},
                          "id": 3})
    assert pada.take() == [{"type": "error", "code": "presence_refused", "id": 3,
                            "message": "refused"}]
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "busy", "id": 4})
    assert pada.take() == [{"type": "error", "code": "no_busy_here", "id": 4,
                            "message": "busy is not allowed in this room"}]
    assert hub.presence("room")["ada"] == before and pw.take() == [] and events == []
    assert len(calls) == 2
    await send(hub, ada, {"type": "ping", "id": 5})
    assert pada.take() == [{"type": "pong", "id": 5}]
    assert ada.is_open and ada.subscriptions == {"room"} and pada.closes == []
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "away", "id": 6})
    assert pada.take()[-1] == {"type": "presence", "channel": "room", "id": 6,
                               "changed": ["state"]}  # the role came with the join
    assert hub.presence("room")["ada"] == {"connections": 1, "state": "away",
                                           "meta": {"role": "member"}}


async def test_presence_message_checks_come_before_the_hook() -> None:
    hub, ada, pada, pw, events, calls = await presence_pair(presence_rules)
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "sleepy", "id": 1})
    await send(hub, ada, {"type": "presence", "channel": "room", "meta": {"x": "y" * 2000},
                          "id": 2})
    await send(hub, ada, {"type": "presence", "channel": "hall", "state": "away", "id": 3})
    assert [(m["code"], m["id"]) for m in pada.take()] == [
        ("bad_presence_state", 1), ("presence_meta_too_large", 2), ("not_subscribed", 3)]
    assert calls == [] and ada.is_open


@pytest.mark.parametrize(("hook", "code"), [
    (lambda s, ch, change: 1 / 0, "hook_failed"),
    (lambda s, ch, change: asyncio.sleep(1), "hook_timeout"),
])
async def test_presence_message_hook_failure_refuses_with_its_code(hook: Any,
                                                                   code: str) -> None:
    hub = hub_with()
    ada, pada = await open_session(hub, "ada")
    await send(hub, ada, {"type": "subscribe", "channel": "room"})
    hub.hooks = Hooks(timeout=0.05, on_presence=hook)  # the join ran without it
    pada.take()
    await send(hub, ada, {"type": "presence", "channel": "room", "state": "away", "id": 7})
    [err] = pada.take()
    assert (err["type"], err["code"], err["id"]) == ("error", code, 7)
    assert hub.presence("room")["ada"] == {"connections": 1} and ada.is_open


async def test_member_kicked_while_an_async_on_presence_runs_gets_not_subscribed() -> None:
    release = asyncio.Event()

    async def slow(session: Session, channel: str, change: dict[str, Any]) -> Any:
        if change["event"] == "update":
            await release.wait()
        return None

    hub = Hub(ServerOptions(), hooks=Hooks(timeout=5.0, on_presence=slow))
    ada, pada = await open_session(hub, "ada")
    watcher, pw = await open_session(hub, "w")
    await send(hub, watcher, {"type": "subscribe", "channel": "room"})
    await send(hub, ada, {"type": "subscribe", "channel": "room"})
    pada.take()
    pending = hub.receive_text(ada, json.dumps(
        {"type": "presence", "channel": "room", "state": "away", "id": 4}))
    assert pending is not None  # the hook is still running
    await asyncio.sleep(0)
    hub.kick("room", "ada")
    pw.take()
    release.set()
    await pending
    assert pada.take() == [
        {"type": "unsubscribed", "channel": "room", "reason": "kicked"},
        {"type": "error", "code": "not_subscribed", "id": 4,
         "message": "not subscribed to 'room'"}]
    assert pw.take() == [] and "ada" not in hub.presence("room") and ada.is_open


async def test_server_side_changes_do_not_run_on_presence() -> None:
    hub, ada, pada, pw, events, calls = await presence_pair(presence_rules)
    assert hub.set_member("room", "ada", state="busy", meta={"status": "dnd"}) == [
        "state", "meta"]
    assert hub.set_presence(ada, "room", state="away") == ["state"]
    assert calls == [], "set_member / set_presence are the server's own: no hook"
    assert hub.presence("room")["ada"] == {"connections": 1, "state": "away",
                                           "meta": {"status": "dnd"}}
    # update_presence is the hooked server path: as if ada sent the presence message
    assert await settle(hub.update_presence(ada, "room", state="busy")) is False
    assert await settle(hub.update_presence(ada, "room", {"status": "in"},
                                            state="online")) is True
    assert [c["changed"] for c in calls] == [["state"], ["state", "meta"]]
    assert hub.presence("room")["ada"] == {"connections": 1,
                                           "meta": {"status": "in", "role": "member"}}


async def test_on_disconnect_is_called_and_errors_are_contained() -> None:
    calls: list[tuple[str, int | None]] = []

    def bye(session: Session, code: int | None, reason: str) -> None:
        calls.append((session.user, code))
        raise RuntimeError("boom")

    hub = hub_with(on_disconnect=bye)
    s, _ = await open_session(hub, "ada")
    hub.closed(s, 1000, "")
    assert calls == [("ada", 1000)]

"""Requests on the inbound path: every request with an ``id`` gets its reply (issue 14, point 3).

docs/protocol.md: ``message_refused`` — "the server's ``on_message`` hook or a
middleware dropped the message (sent only when the request had an ``id``)". Before
the request object (core/requests.py), a middleware that returned without calling
``call_next`` sent nothing and emitted nothing, so a client waiting for ``published``
(``publish(ack=True)``) waited its whole request timeout.

The rest checks the request object itself: one answer per request, none on a
connection that closed while a hook ran, and errors built whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.authz import ChannelRule
from realtime_lab.core.events import Event
from realtime_lab.core.hooks import Hooks, Refuse
from realtime_lab.core.requests import Request
from realtime_lab.errors import (
    BadField,
    ConnectRefused,
    Forbidden,
    RateLimited,
    SubscribeRefused,
)
from realtime_lab.middleware import Inbound, Middleware
from realtime_lab.protocol import messages
from realtime_lab.testing import ManualClock, RecordingPort

PUBLISH = {"type": "publish", "channel": "room", "data": 1}


class DropSync(Middleware):
    def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        return None  # not calling next drops the message (docs/middleware.md)


class DropAsync(Middleware):
    async def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        return None


async def _send(hub: Hub, session: Any, message: dict[str, Any]) -> None:
    result = hub.receive_text(session, json.dumps(message))
    if inspect.isawaitable(result):
        await result


def _hub(**kwargs: Any) -> tuple[Hub, Any, RecordingPort, list[Event]]:
    hub = Hub(ServerOptions(), clock=ManualClock(10.0), **kwargs)
    events: list[Event] = []
    hub.bus.subscribe(events.append, "*")
    port = RecordingPort()
    session = hub.open(port, user="ada")
    port.take()
    events.clear()
    return hub, session, port, events


def _refusal(port: RecordingPort, events: list[Event]) -> tuple[Any, ...]:
    replies = port.take()
    errors = [e.as_dict()["code"] for e in events if e.type == "error"]
    dropped = [e.as_dict()["reason"] for e in events if e.type == "message.dropped"]
    return replies, errors, dropped


async def test_hook_that_drops_a_request_answers_message_refused() -> None:
    """The ``on_message`` path: reply and events (the behaviour middleware should match)."""
    hub, session, port, events = _hub(hooks=Hooks(on_message=lambda s, m: False))
    await _send(hub, session, {**PUBLISH, "id": 7})
    replies, errors, dropped = _refusal(port, events)
    assert replies == [{"type": "error", "code": "message_refused", "id": 7,
                        "message": "refused"}]
    assert errors == ["message_refused"] and dropped == ["hook"]


@pytest.mark.parametrize("middleware", [DropSync, DropAsync])
async def test_middleware_that_drops_a_request_answers_message_refused(
        middleware: type[Middleware]) -> None:
    hub, session, port, events = _hub(middleware=[middleware()])
    await _send(hub, session, {**PUBLISH, "id": 7})
    replies, errors, dropped = _refusal(port, events)
    assert [(r["type"], r.get("code"), r.get("id")) for r in replies] == [
        ("error", "message_refused", 7)], replies
    assert errors == ["message_refused"], events
    assert dropped == ["middleware"], events  # the reason events.MessageDropped documents
    assert session.is_open


@pytest.mark.parametrize("middleware", [DropSync, DropAsync])
async def test_middleware_that_drops_a_message_without_id_sends_nothing(
        middleware: type[Middleware]) -> None:
    hub, session, port, _ = _hub(middleware=[middleware()])
    await _send(hub, session, PUBLISH)
    assert port.take() == [] and session.is_open


@pytest.mark.parametrize("middleware", [DropSync, DropAsync])
async def test_a_middleware_drop_is_counted_and_names_the_channel(
        middleware: type[Middleware]) -> None:
    hub, session, port, events = _hub(middleware=[middleware()])
    await _send(hub, session, {**PUBLISH, "id": 7})
    await _send(hub, session, {"type": "ping", "id": "p"})
    await _send(hub, session, PUBLISH)
    assert [(r.get("code"), r.get("id")) for r in port.take()] == [
        ("message_refused", 7), ("message_refused", "p")]
    drops = [e for e in events if e.type == "message.dropped"]
    assert [(e.channel, e.reason, e.session) for e in drops] == [  # type: ignore[attr-defined]
        ("room", "middleware", session.id), (None, "middleware", session.id),
        ("room", "middleware", session.id)]
    stats = hub.stats
    assert stats.dropped == stats.dropped_by_middleware == 3 and stats.dropped_by_hook == 0
    assert session.stats.dropped == 3 and stats.errors_sent == 2


class PassCopy(Middleware):
    """Passes on a copy of the context (dataclasses.replace keeps its request)."""

    def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        return call_next(dataclasses.replace(ctx, message={**ctx.message, "data": 2}))


class PassNew(Middleware):
    """Passes on a context of its own making (without the request)."""

    def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        return call_next(Inbound(ctx.session, ctx.message, ctx.size, ctx.now, ctx.hub))


class Refusing(Middleware):
    """Refuses with an error of its own: that is the answer, not a drop."""

    def inbound(self, ctx: Inbound, call_next: Callable[[Any], Any]) -> Any:
        raise RateLimited("slow down")


async def test_a_middleware_that_passes_a_copy_of_the_context_is_not_a_drop() -> None:
    hub, session, port, events = _hub(middleware=[PassCopy()])
    await _send(hub, session, {**PUBLISH, "id": 7})
    assert port.take() == [{"type": "published", "channel": "room", "id": 7, "recipients": 0}]
    assert hub.stats.dropped == 0 and not [e for e in events if e.type == "message.dropped"]


async def test_a_context_without_its_request_is_still_answered() -> None:
    hub, session, port, _ = _hub(middleware=[PassNew()])
    await _send(hub, session, {"type": "ping", "id": 3})
    assert port.take()[0] == {"type": "pong", "id": 3}


async def test_a_middleware_error_is_the_answer_not_a_drop() -> None:
    hub, session, port, events = _hub(middleware=[Refusing()])
    await _send(hub, session, {**PUBLISH, "id": 7})
    assert [(r["code"], r["id"]) for r in port.take()] == [("rate_limited", 7)]
    assert hub.stats.dropped == 0 and not [e for e in events if e.type == "message.dropped"]


# ---------------------------------------------------------------------------- closed


def _gate() -> tuple[asyncio.Event, Callable[..., Any]]:
    """An async hook (or authorizer) that waits for the returned event, then allows."""
    gate = asyncio.Event()

    async def hook(*args: Any) -> bool:
        await gate.wait()
        return True

    return gate, hook


@pytest.mark.parametrize("kind", ["message", "subscribe", "unsubscribe", "presence",
                                  "authorizer"])
async def test_a_request_whose_connection_closed_while_a_hook_ran_goes_no_further(
        kind: str) -> None:
    """The continuation of a closed connection's request is dropped (Request.then): no
    reply, no error, no subscription, no channel, no presence change."""
    gate, hook = _gate()
    hooks = {"message": Hooks(on_message=hook), "subscribe": Hooks(on_subscribe=hook),
             "unsubscribe": Hooks(on_unsubscribe=hook),
             "presence": Hooks(on_presence=lambda s, c, change: hook()
                               if change["event"] == "update" else None),
             "authorizer": Hooks()}[kind]
    options = ServerOptions(presence_channels="room", channel_rules=(
        ChannelRule("room", "private"),) if kind == "authorizer" else (),
        authorizer=hook if kind == "authorizer" else None)
    hub = Hub(options, clock=ManualClock(10.0), hooks=hooks)
    port = RecordingPort()
    session = hub.open(port, user="ada")
    if kind in ("unsubscribe", "presence"):
        assert hub.subscribe(session, "room") is None
    port.take()
    message = {"message": {**PUBLISH, "id": 1},
               "subscribe": {"type": "subscribe", "channel": "room", "id": 1},
               "authorizer": {"type": "subscribe", "channel": "room", "id": 1},
               "unsubscribe": {"type": "unsubscribe", "channel": "room", "id": 1},
               "presence": {"type": "presence", "channel": "room", "state": "away", "id": 1},
               }[kind]
    pending = hub.receive_text(session, json.dumps(message))
    assert inspect.isawaitable(pending)
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0)
    hub.closed(session, 1001, "gone")
    gate.set()
    await asyncio.wait_for(task, 5)
    assert port.take() == [] and hub.stats.errors_sent == 0 and hub.stats.published == 0
    assert session.subscriptions == set() and "room" not in hub.channels


# ---------------------------------------------------------------------------- Request


def test_a_request_is_answered_once_and_only_while_open() -> None:
    hub, session, port, events = _hub()
    request = Request(session, 5, "ping", hub)
    request.reply(messages.pong_message(request.id))
    request.reply(messages.pong_message(request.id))
    request.reject(BadField("late"))
    assert port.take() == [{"type": "pong", "id": 5}] and request.answered
    other = Request(session, 6, "publish", hub)
    other.reject(Forbidden("no", request_id=99))  # the request's id wins
    other.reject(Forbidden("again"))
    assert port.take() == [{"type": "error", "code": "forbidden", "message": "no", "id": 6}]
    hub.closed(session, 1000, "bye")
    late = Request(session, 7, "ping", hub)
    late.reply(messages.pong_message(7))
    late.reject(BadField("x"))
    assert port.take() == [] and hub.stats.errors_sent == 1


def test_errors_are_built_whole() -> None:
    err = Forbidden("no", request_id=3)
    other = err.for_request(4)
    assert (err.request_id, other.request_id) == (3, 4) and err.for_request(3) is err
    assert type(other) is Forbidden and other.message == "no" and other.args == ("no",)
    assert Refuse("mine", "why").error(SubscribeRefused).code == "mine"
    assert Refuse(4010, "why").error(SubscribeRefused).code == "subscribe_refused"
    refused = Refuse(4010, "banned").error(ConnectRefused)
    assert (refused.code, refused.close_code, refused.message) == (
        "connect_refused", 4010, "banned")
    assert Refuse("x").error(ConnectRefused).close_code == ConnectRefused.close_code
    assert SubscribeRefused.code == "subscribe_refused"  # the class keeps its own

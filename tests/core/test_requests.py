"""Requests on the inbound path: every request with an ``id`` gets its reply (issue 14, point 3).

docs/protocol.md: ``message_refused`` — "the server's ``on_message`` hook or a
middleware dropped the message (sent only when the request had an ``id``)". The
hook keeps that promise; a middleware that returns without calling ``call_next``
does not (no reply, no event), so a client that waits for ``published``
(``publish(ack=True)``) waits its whole request timeout. The failing test is marked
``xfail(strict=True)`` until the request object (``reply()`` / ``reject()``) lands.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.events import Event
from realtime_lab.core.hooks import Hooks
from realtime_lab.middleware import Inbound, Middleware
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


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "issue 14: a middleware that drops a request that has an id sends no reply and emits "
    "no event (docs/protocol.md promises message_refused)"))
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

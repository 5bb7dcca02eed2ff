"""History: offsets and epoch, size and age limits, recovery exactly once and its flag."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.history import HistoryRule
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.testing import ManualClock, RecordingPort


def make(*rules: HistoryRule) -> tuple[Hub, ManualClock]:
    clock = ManualClock(100.0)
    return Hub(ServerOptions(history=rules, presence_channels=None), clock=clock), clock


def session(hub: Hub) -> Session:
    s = hub.open(RecordingPort("h"), user="u", request=ConnectRequest(remote="h"))
    s.port.take()  # type: ignore[attr-defined]
    return s  # type: ignore[no-any-return]


def sub(hub: Hub, s: Session, name: str, since: dict[str, Any] | None = None
        ) -> list[dict[str, Any]]:
    msg: dict[str, Any] = {"type": "subscribe", "channel": name, "id": 1}
    if since is not None:
        msg["since"] = since
    hub.receive_text(s, json.dumps(msg))
    return s.port.take()  # type: ignore[attr-defined, no-any-return]


def test_plain_channels_have_no_offsets_by_default() -> None:
    hub, _ = make()
    s = session(hub)
    assert sub(hub, s, "news")[0] == {"type": "subscribed", "channel": "news", "id": 1}
    hub.publish("news", 1)
    assert "offset" not in s.port.take()[0]  # type: ignore[attr-defined]


def test_recovery_sends_missed_in_order_once_then_complete() -> None:
    hub, _ = make(HistoryRule("chat-*", size=10))
    s = session(hub)
    reply = sub(hub, s, "chat-1")[0]
    assert reply["offset"] == 0 and isinstance(reply["epoch"], str)
    for i in range(3):
        hub.publish("chat-1", i)
    got = s.port.take()  # type: ignore[attr-defined]
    assert [m["offset"] for m in got] == [1, 2, 3]
    epoch = got[0]["epoch"]
    hub.closed(s)
    for i in range(3, 8):  # published while away (the channel even disappears)
        hub.publish("chat-1", i)
    s2 = session(hub)
    out = sub(hub, s2, "chat-1", {"offset": 3, "epoch": epoch})
    assert out[0]["type"] == "subscribed" and out[0]["offset"] == 8
    assert [m["data"] for m in out[1:-1]] == [3, 4, 5, 6, 7]
    assert out[-1] == {"type": "recovered", "channel": "chat-1", "complete": True, "count": 5,
                       "offset": 8, "epoch": epoch}
    hub.publish("chat-1", 8)
    assert [m["offset"] for m in s2.port.take()] == [9]  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", ["too_small", "too_old", "other_epoch", "future"])
def test_incomplete_recovery_is_flagged(case: str) -> None:
    hub, clock = make(HistoryRule("*", size=3, ttl=10.0))
    s = session(hub)
    epoch = sub(hub, s, "room")[0]["epoch"]
    hub.publish("room", 0)  # offset 1, seen
    hub.closed(s)
    for i in range(1, 6):  # offsets 2..6; the history keeps 4..6
        hub.publish("room", i)
    since = {"offset": 1, "epoch": epoch}
    if case == "too_old":
        clock.now += 11
    elif case == "other_epoch":
        since["epoch"] = "0000"
    elif case == "future":
        since["offset"] = 99
    out = sub(hub, session(hub), "room", since)
    flag = out[-1]
    assert flag["type"] == "recovered" and flag["complete"] is False
    if case == "too_small":
        assert [m["offset"] for m in out[1:-1]] == [4, 5, 6]
    else:
        assert out[1:-1] == []


def test_bad_since_is_refused() -> None:
    hub, _ = make(HistoryRule("*"))
    s = session(hub)
    assert sub(hub, s, "room", {"offset": "1", "epoch": "x"})[0]["code"] == "bad_field"
    assert hub.history("room") == []

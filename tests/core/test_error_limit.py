"""error_limit: a connection that keeps sending invalid messages is closed with 4008."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core import events as ev
from realtime_lab.core.error_limit import INVALID_INPUT_CODES
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.testing import RecordingPort


class Lab:
    """A hub (frames written at once) with a manual clock and one recording connection."""

    def __init__(self, **options: Any) -> None:
        self.now = 1000.0
        self.hub = Hub(ServerOptions(**options), clock=lambda: self.now)
        self.events: list[ev.Event] = []
        self.hub.bus.subscribe(self.events.append)
        self.port = RecordingPort()
        self.session: Session = self.hub.open(self.port, user="ada")
        self.port.take()

    def send(self, raw: str) -> list[dict[str, Any]]:
        self.hub.receive_text(self.session, raw)
        return self.port.take()


def test_default_is_20_in_10_seconds() -> None:
    assert ServerOptions().error_limit == (20, 10.0)
    assert ServerOptions(error_limit=None).error_limit is None
    assert ServerOptions(error_limit=[3, 1]).error_limit == (3, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [(0, 10), (-1, 10), (1.5, 10), (True, 10), ("5", 10),
                                   (5, 0), (5, -1), (5, math.inf), (5, math.nan), (5, "10"),
                                   (5, True), 5, (5,), (1, 2, 3), "20/10"])
def test_bad_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="error_limit"):
        ServerOptions(error_limit=value)  # type: ignore[arg-type]


def test_the_countth_invalid_message_closes_with_4008() -> None:
    lab = Lab(error_limit=(3, 10.0))
    assert [m["code"] for m in lab.send("{bad")] == ["bad_json"]
    assert [m["code"] for m in lab.send('{"type":"shout"}')] == ["unknown_type"]
    assert lab.port.closes == []
    third = lab.send('{"type":"subscribe"}')
    assert [m["code"] for m in third] == ["missing_field", "too_many_errors"]
    assert "3 invalid messages within 10 s" in third[1]["message"]
    assert lab.port.closes == [(CloseCode.TOO_MANY_ERRORS, "too_many_errors")]
    assert lab.hub.stats.too_many_errors == 1
    limit = [e for e in lab.events if isinstance(e, ev.LimitExceeded)]
    assert [(e.limit, e.code, e.session) for e in limit] == [
        ("error_limit", 4008, lab.session.id)]
    assert lab.send("{bad") == [], "a closing connection is not answered any more"
    assert lab.hub.stats.too_many_errors == 1


def test_errors_older_than_the_window_do_not_count() -> None:
    lab = Lab(error_limit=(3, 10.0))
    for _ in range(20):
        lab.send("{bad")
        lab.send("{bad")
        lab.now += 10.0  # two per window, never three
    assert lab.port.closes == []
    lab.send("{bad")
    lab.now += 9.9
    lab.send("{bad")
    assert [m["code"] for m in lab.send("{bad")] == ["bad_json", "too_many_errors"]


def test_refusals_of_valid_requests_do_not_count() -> None:
    lab = Lab(error_limit=(2, 10.0), client_publish=False)
    for n in range(10):
        replies = lab.send(json.dumps({"type": "publish", "channel": "room", "data": n, "id": n}))
        assert [m["code"] for m in replies] == ["forbidden"]
        replies = lab.send(json.dumps({"type": "unsubscribe", "channel": "x", "id": n}))
        assert [m["code"] for m in replies] == ["not_subscribed"]
    assert lab.port.closes == []
    assert {"forbidden", "not_subscribed", "internal_error"}.isdisjoint(INVALID_INPUT_CODES)


def test_binary_frames_on_json_count() -> None:
    lab = Lab(error_limit=(2, 10.0))
    lab.hub.receive_binary(lab.session, b"\x00")
    lab.hub.receive_binary(lab.session, b"\x00")
    assert [m["code"] for m in lab.port.take()] == [
        "binary_not_supported", "binary_not_supported", "too_many_errors"]
    assert lab.port.closes == [(4008, "too_many_errors")]


def test_none_never_closes() -> None:
    lab = Lab(error_limit=None)
    for _ in range(200):
        lab.send("{bad")
    assert lab.port.closes == [] and lab.hub.stats.too_many_errors == 0
    assert lab.session.invalid_times is None, "nothing is tracked when the limit is off"


def test_connections_are_counted_separately() -> None:
    lab = Lab(error_limit=(2, 10.0))
    other_port = RecordingPort()
    other = lab.hub.open(other_port, user="bob")
    lab.send("{bad")
    lab.hub.receive_text(other, "{bad")
    assert lab.port.closes == [] and other_port.closes == []

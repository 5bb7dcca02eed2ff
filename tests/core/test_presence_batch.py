"""Batched presence diffs (core/presence_batch.py): the merge rules, the window, and a
join storm in the hub. The property test over random steps is in test_presence.py
(test_batched_diffs_rebuild_the_servers_member_list)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.presence_batch import PresenceBatcher
from realtime_lab.protocol import messages
from realtime_lab.testing import ManualClock, ManualScheduler, RecordingPort

WINDOW = 0.05


class Sink:
    """A batcher with a fake scheduler, and the diffs it sent."""

    def __init__(self, window: float = WINDOW, *, details: bool = True,
                 max_bytes: int = 64 * 1024) -> None:
        self.clock = ManualClock(0.0)
        self.timers = ManualScheduler(self.clock)
        self.sent: list[tuple[str, dict[str, Any], object]] = []
        #: (diff, only, skip) of each diff sent
        self.audiences: list[tuple[dict[str, Any], object, object]] = []
        self.sizes: list[int] = []  # the bytes of each diff sent, as on the wire
        self.batch = PresenceBatcher(window, self._record, details=details,
                                     max_bytes=max_bytes)
        self.batch.bind(self.timers)

    def _record(self, channel: str, diff: dict[str, Any], exclude: object, text: object,
                only: object, skip: object) -> None:
        assert isinstance(text, str) and json.loads(text) == diff  # the text is the diff
        self.sizes.append(len(text.encode()))
        self.sent.append((channel, diff, exclude))
        self.audiences.append((diff, None if only is None else sorted(only),  # type: ignore[call-overload]
                               sorted(skip)))  # type: ignore[call-overload]

    def join(self, user: str, n: int = 1, **info: Any) -> None:
        self.batch.add("room", messages.presence_diff_message(
            "room", {user: {"connections": n, **info}}, {}))

    def update(self, user: str, fields: list[str], n: int = 1, **info: Any) -> None:
        diff = messages.presence_diff_message("room", {user: {"connections": n, **info}}, {})
        diff["changed"] = {user: fields}
        self.batch.add("room", diff)

    def leave(self, user: str, reason: str | None = None) -> None:
        info: dict[str, Any] = {"connections": 0}
        if reason:
            info["reason"] = reason
        self.batch.add("room", messages.presence_diff_message("room", {}, {user: info}))

    def window_ends(self) -> list[dict[str, Any]]:
        self.clock.advance(WINDOW)
        self.timers.run_due()
        out = [d for _, d, _ in self.sent]
        self.sent.clear()
        return out


def test_changes_of_one_window_merge_into_one_diff() -> None:
    sink = Sink()
    sink.join("ada")
    sink.join("bob")
    sink.update("ada", ["state"], state="away")
    assert sink.sent == [] and sink.batch.pending == 1
    sink.clock.advance(WINDOW / 2)
    assert sink.timers.run_due() == 0  # not yet
    [diff] = sink.window_ends()
    # ada joined in this window: a join with its latest info, no `changed` entry
    assert diff == {"type": "presence_diff", "channel": "room", "leaves": {},
                    "joins": {"ada": {"connections": 1, "state": "away"},
                              "bob": {"connections": 1}}}
    assert sink.window_ends() == [] and sink.timers.waiting == 0  # nothing new: no timer
    assert (sink.batch.stats.diffs_in, sink.batch.stats.diffs_out) == (3, 1)


def test_a_join_then_a_leave_in_one_window_sends_nothing() -> None:
    sink = Sink()
    sink.join("ada")
    sink.leave("ada", "closed")
    assert sink.window_ends() == []


class Reader:
    """A connection the batcher is told got a member list (it only reads its id)."""

    def __init__(self, sid: str) -> None:
        self.id = sid


def synced(sink: Sink, sid: str) -> None:
    sink.batch.synced("room", cast("Session", Reader(sid)))


def audiences(sink: Sink) -> list[tuple[dict[str, Any], object, object]]:
    sink.window_ends()
    out, sink.audiences = sink.audiences, []
    return out


def test_a_list_sent_before_the_window_began_gets_the_shared_diff() -> None:
    sink = Sink()
    synced(sink, "s1")  # nothing pending: its list predates every change
    sink.join("ada")
    [(diff, only, skip)] = audiences(sink)
    assert (only, skip) == (None, []) and list(diff["joins"]) == ["ada"]


def test_a_list_sent_after_every_change_of_the_window_gets_nothing() -> None:
    """Its own join and the members its list has: no echo, no second copy."""
    sink = Sink()
    sink.join("ada")
    sink.join("bob")
    synced(sink, "s1")
    [(diff, only, skip)] = audiences(sink)
    assert (only, skip) == (None, ["s1"]) and list(diff["joins"]) == ["ada", "bob"]
    assert sink.batch.stats.own_diffs == 0


def test_a_list_sent_in_between_gets_the_changes_after_it_as_seen_from_it() -> None:
    sink = Sink()
    sink.join("ada")
    synced(sink, "s1")
    synced(sink, "s2")  # same point: one diff for both
    sink.join("bob")
    sink.update("ada", ["state"], state="away")
    shared, own = audiences(sink)
    assert shared[1:] == (None, ["s1", "s2"])
    assert shared[0]["joins"] == {"ada": {"connections": 1, "state": "away"},
                                  "bob": {"connections": 1}} and "changed" not in shared[0]
    diff, only, skip = own
    assert (only, skip) == (["s1", "s2"], [])
    # ada is in its list (a new member there): an update of the field changed since
    assert diff["joins"] == shared[0]["joins"] and diff["changed"] == {"ada": ["state"]}
    assert sink.batch.stats.own_diffs == 2


def test_a_join_then_a_leave_around_a_list_is_a_leave_for_that_list_only() -> None:
    """The newcomer's presence_state listed ada: without the leave it would keep her;
    the others never saw her: nothing for them (no phantom either way)."""
    sink = Sink()
    sink.join("ada")
    synced(sink, "s1")
    sink.leave("ada", "closed")
    sink.join("bob")
    synced(sink, "s2")
    sink.leave("bob", "closed")
    sink.join("cy")
    sink.leave("cy", "closed")
    sink.join("dan")
    [(shared, _, skip), (first, only1, _), (second, only2, _)] = audiences(sink)
    # dan's join is news for everyone: the same frame (s1 and s2 included)
    assert skip == [] and shared["leaves"] == {} and list(shared["joins"]) == ["dan"]
    assert only1 == ["s1"] and first["leaves"] == {"ada": {"connections": 0,
                                                          "reason": "closed"}}
    assert first["joins"] == {}  # bob and cy came and went after its list: nothing
    assert only2 == ["s2"] and list(second["leaves"]) == ["bob"] and second["joins"] == {}
    synced(sink, "s3")  # a list sent with nothing pending changes nothing
    assert sink.window_ends() == []


def test_a_leave_then_a_join_around_a_list_is_a_join_for_that_list() -> None:
    """dan was a member, left, the newcomer's list missed him, he came back: for the
    others an update, for the newcomer a join (a Pusher client's member_added)."""
    sink = Sink()
    sink.leave("dan", "closed")
    synced(sink, "s1")
    sink.join("dan", state="busy")
    [(shared, _, _), (own, only, _)] = audiences(sink)
    assert shared["changed"] == {"dan": ["connections", "state", "meta"]}
    assert only == ["s1"] and own["joins"] == shared["joins"] and "changed" not in own
    # listed, then left and came back after the list: an update, every rejoin field
    sink.update("eve", ["meta"], meta={"x": 1})
    synced(sink, "s1")
    sink.leave("eve", "closed")
    sink.join("eve")
    [(shared, _, _), (own, _, _)] = audiences(sink)
    assert own["changed"] == shared["changed"] == {"eve": ["connections", "state", "meta"]}


def test_a_leave_then_a_join_is_an_update_naming_every_field() -> None:
    sink = Sink()
    sink.leave("ada", "closed")
    sink.join("ada", state="busy")
    [diff] = sink.window_ends()
    assert diff["leaves"] == {} and diff["joins"] == {"ada": {"connections": 1,
                                                              "state": "busy"}}
    assert diff["changed"] == {"ada": ["connections", "state", "meta"]}
    minimal = Sink(details=False)
    minimal.leave("ada")
    minimal.join("ada")
    assert minimal.window_ends()[0]["changed"] == {"ada": ["state", "meta"]}


def test_updates_merge_their_fields_and_a_last_leave_keeps_its_reason() -> None:
    sink = Sink()
    sink.update("ada", ["connections"], n=2)
    sink.update("ada", ["state"], n=2, state="away")
    sink.update("bob", ["meta"], meta={"x": 1})
    sink.leave("bob", "timeout")
    [diff] = sink.window_ends()
    assert diff["joins"] == {"ada": {"connections": 2, "state": "away"}}
    assert diff["changed"] == {"ada": ["connections", "state"]}
    assert diff["leaves"] == {"bob": {"connections": 0, "reason": "timeout"}}


@pytest.mark.parametrize("window, bound", [(0.0, True), (WINDOW, False)],
                         ids=["window-0", "no-scheduler"])
def test_window_zero_or_no_scheduler_sends_each_diff_at_once_with_its_exclude(
        window: float, bound: bool) -> None:
    sent: list[tuple[str, dict[str, Any], object]] = []
    batch = PresenceBatcher(window, lambda c, d, x, t, only, skip: sent.append((c, d, x)))
    if bound:
        batch.bind(ManualScheduler(ManualClock()))
    diff = messages.presence_diff_message("room", {"ada": {"connections": 1}}, {})
    marker = object()
    batch.add("room", diff, marker)  # type: ignore[arg-type]
    assert sent == [("room", diff, marker)] and not batch.batching


def test_a_large_window_goes_in_diffs_of_at_most_max_bytes() -> None:
    """1000 joins of 100 bytes of metadata each, max_bytes 8 KiB: several diffs, each
    under the bound (one frame of 100 KB otherwise), every member in one of them."""
    sink = Sink(max_bytes=8192)
    sink.update("ada", ["state"], state="away")
    sink.leave("bob", "closed")
    for i in range(1000):
        sink.join(f"m{i:04d}", meta={"bio": "x" * 100})
    diffs = sink.window_ends()
    assert len(diffs) > 12 and len(sink.sizes) == len(diffs) and max(sink.sizes) <= 8192
    joins = [u for d in diffs for u in d["joins"]]
    assert sorted(joins) == ["ada"] + [f"m{i:04d}" for i in range(1000)]
    assert [u for d in diffs for u in d["leaves"]] == ["bob"]
    assert [d["changed"] for d in diffs if "changed" in d] == [{"ada": ["state"]}]


def test_close_forgets_what_waits() -> None:
    sink = Sink()
    sink.join("ada")
    sink.batch.close()
    assert sink.batch.pending == 0 and sink.window_ends() == []


@pytest.mark.parametrize("window", [-1, float("inf"), float("nan"), True, "0.05"])
def test_a_bad_window_is_refused(window: Any) -> None:
    with pytest.raises(ValueError, match="presence_batch_window"):
        ServerOptions(presence_batch_window=window)


def open_members(hub: Hub, n: int) -> list[Session]:
    sessions = []
    for i in range(n):
        port = RecordingPort()
        sessions.append(hub.open(port, user=f"u{i}", request=ConnectRequest(remote="x")))
        port.take()
    return sessions


@pytest.mark.parametrize("window", [0.0, WINDOW])
def test_a_join_storm_in_the_hub_costs_a_frame_per_member_per_window(window: float) -> None:
    """200 joins in one window: each member gets its presence_state and one merged
    diff (at most), not a diff per later join; every rebuilt list is exact."""
    n = 200
    clock = ManualClock(0.0)
    hub = Hub(ServerOptions(presence_batch_window=window), clock=clock)
    timers = ManualScheduler(clock)
    hub.bind(timers)
    sessions = open_members(hub, n)
    for s in sessions:
        hub.receive_text(s, json.dumps({"type": "subscribe", "channel": "room"}))
    clock.advance(WINDOW)
    timers.run_due()
    frames = 0
    for s in sessions:
        members: dict[str, Any] = {}
        for msg in s.port.take():  # type: ignore[attr-defined]
            if msg["type"] == "presence_state":
                members = dict(msg["members"])
            elif msg["type"] == "presence_diff":
                frames += 1
                for user in msg["leaves"]:
                    members.pop(user, None)
                members.update(msg["joins"])
        assert members == hub.presence("room")
    # batched: one merged diff each, but none for the last joiner (its list has every join)
    assert frames == (n - 1 if window else n * (n - 1) // 2)
    assert hub.stats.deliveries == frames

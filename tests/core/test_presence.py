"""Presence: multi-tab, states and meta, grace period, leave reasons, limits, and a
property test: the member list rebuilt from presence_state + diffs equals the server's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from realtime_lab.client.presence import PresenceView
from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.testing import ManualClock, ManualScheduler, RecordingPort, SlowPort


class Lab:
    """A hub with fake ports and a fake clock, and an event log."""

    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock(1000.0)
        self.hub = Hub(ServerOptions(**options), clock=self.clock)
        self.events: list[Any] = []
        self.hub.bus.subscribe(self.events.append, "presence.*")
        self.on_advance: Callable[[], object] = lambda: None

    def open(self, user: str, port: RecordingPort | None = None) -> Session:
        port = port or RecordingPort("10.0.0.8")
        session = self.hub.open(port, user=user, request=ConnectRequest(remote="x", user=user))
        port.take()
        return session  # type: ignore[no-any-return]

    def send(self, s: Session, msg: dict[str, Any]) -> list[dict[str, Any]]:
        self.hub.receive_text(s, json.dumps(msg))
        return s.port.take()  # type: ignore[attr-defined, no-any-return]

    def sub(self, s: Session, channel: str = "room") -> list[dict[str, Any]]:
        return self.send(s, {"type": "subscribe", "channel": channel})

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.hub.expire_presence()
        self.on_advance()  # timers due (a ManualScheduler's run_due)

    def kinds(self) -> list[tuple[str, str | None]]:
        out = [(e.type, e.user) for e in self.events]
        self.events.clear()
        return out


def test_two_tabs_one_join_one_leave_and_counts_are_announced() -> None:
    lab = Lab(presence_details=True)
    watcher = lab.open("w")
    lab.sub(watcher)
    lab.kinds()
    tab1, tab2 = lab.open("ada"), lab.open("ada")
    lab.sub(tab1)
    lab.sub(tab2)
    diffs = watcher.port.take()  # type: ignore[attr-defined]
    assert diffs[0]["joins"] == {"ada": {"connections": 1}} and "changed" not in diffs[0]
    assert diffs[1]["joins"] == {"ada": {"connections": 2}}
    assert diffs[1]["changed"] == {"ada": ["connections"]}
    lab.hub.closed(tab1)
    lab.hub.closed(tab2)
    diffs = watcher.port.take()  # type: ignore[attr-defined]
    assert diffs[0]["joins"]["ada"]["connections"] == 1
    assert diffs[1]["leaves"] == {"ada": {"connections": 0, "reason": "closed"}}
    assert lab.kinds() == [("presence.join", "ada"), ("presence.leave", "ada")]
    assert lab.events == []


def test_reconnect_within_grace_is_silent_outside_leave_then_join() -> None:
    lab = Lab(presence_grace=5.0, presence_details=True)
    watcher = lab.open("w")
    lab.sub(watcher)
    ada = lab.open("ada")
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    lab.kinds()
    lab.hub.closed(ada)
    lab.advance(4.0)
    assert "ada" in lab.hub.presence("room")  # held
    ada2 = lab.open("ada")
    lab.sub(ada2)
    lab.advance(10.0)
    assert watcher.port.take() == [] and lab.kinds() == []  # type: ignore[attr-defined]
    lab.hub.closed(ada2)
    lab.advance(5.0)
    ada3 = lab.open("ada")
    lab.sub(ada3)
    diffs = watcher.port.take()  # type: ignore[attr-defined]
    assert [("leaves" if d["leaves"] else "joins") for d in diffs] == ["leaves", "joins"]
    assert diffs[0]["leaves"]["ada"]["reason"] == "closed"
    assert lab.kinds() == [("presence.leave", "ada"), ("presence.join", "ada")]


def test_unsubscribe_is_immediate_even_with_grace_and_last_member_keeps_channel() -> None:
    lab = Lab(presence_grace=5.0)
    ada = lab.open("ada")
    lab.sub(ada)
    lab.hub.closed(ada)
    assert "room" in lab.hub.channels  # the held member keeps the channel
    lab.advance(5.0)
    assert "room" not in lab.hub.channels
    bob = lab.open("bob")
    lab.sub(bob)
    lab.send(bob, {"type": "unsubscribe", "channel": "room"})
    assert "room" not in lab.hub.channels
    assert [e.reason for e in lab.events if e.type == "presence.leave"] == ["closed", "left"]


def test_presence_message_states_meta_and_limits() -> None:
    lab = Lab(max_presence_meta_bytes=40)
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    out = lab.send(ada, {"type": "presence", "channel": "room", "state": "away",
                         "meta": {"mood": "ok"}, "id": 1})
    assert out[-1] == {"type": "presence", "channel": "room", "id": 1,
                       "changed": ["state", "meta"]}
    assert out[0]["type"] == "presence_diff"  # the member sees its own diff too
    diff = watcher.port.take()[0]  # type: ignore[attr-defined]
    assert diff["joins"] == {"ada": {"connections": 1, "state": "away", "meta": {"mood": "ok"}}}
    assert diff["changed"] == {"ada": ["state", "meta"]}
    assert lab.send(ada, {"type": "presence", "channel": "room", "state": "sleepy", "id": 2})[
        0]["code"] == "bad_presence_state"
    assert lab.send(ada, {"type": "presence", "channel": "room", "meta": {"x": "y" * 50},
                          "id": 3})[0]["code"] == "presence_meta_too_large"
    assert lab.send(ada, {"type": "presence", "channel": "nope", "state": "busy", "id": 4})[
        0]["code"] == "not_subscribed"
    lab.send(ada, {"type": "presence", "channel": "room", "state": "online"})
    assert lab.hub.presence("room")["ada"] == {"connections": 1, "meta": {"mood": "ok"}}
    update = [e for e in lab.events if e.type == "presence.update"][0]
    assert update.state == "away" and update.changed == ("state", "meta")
    assert ada.port.closes == []  # type: ignore[attr-defined]


def test_max_members_and_kick() -> None:
    lab = Lab(max_presence_members=2, presence_details=True)
    a, b, c, b2 = lab.open("a"), lab.open("b"), lab.open("c"), lab.open("b")
    lab.sub(a)
    lab.sub(b)
    assert lab.sub(c)[0]["code"] == "presence_full"
    assert lab.sub(b2)[0]["type"] == "subscribed"  # a known member may add a tab
    a.port.take()  # type: ignore[attr-defined]
    assert lab.hub.kick("room", "b") == 2
    assert b.port.take()[-1] == {  # type: ignore[attr-defined]
        "type": "unsubscribed", "channel": "room", "reason": "kicked"}
    assert a.port.take()[-1]["leaves"] == {  # type: ignore[attr-defined]
        "b": {"connections": 0, "reason": "kicked"}}


def test_idle_member_moves_to_idle_state_and_back_on_activity() -> None:
    lab = Lab(presence_idle_timeout=30.0)
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    lab.clock.now += 20
    lab.send(watcher, {"type": "ping"})
    lab.clock.now += 15
    lab.hub.check_presence_idle()
    assert lab.hub.presence("room")["ada"].get("state") == "away"
    assert lab.hub.presence("room")["w"].get("state") is None
    lab.send(ada, {"type": "ping"})
    assert lab.hub.presence("room")["ada"].get("state") is None
    changes = [e.changed for e in lab.events if e.type == "presence.update"]
    assert changes == [("state",), ("state",)]


@pytest.mark.parametrize(("options", "code"), [
    ({"heartbeat_interval": 1.0, "heartbeat_timeout": 1.0}, 4101),  # no pong
    ({"idle_timeout": 2.5}, 4105),  # no message
])
@pytest.mark.parametrize("grace", [0.0, 2.0])
def test_timeout_close_is_a_leave_with_reason_timeout(options: dict[str, Any], code: int,
                                                      grace: float) -> None:
    lab = Lab(presence_grace=grace, **options)
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    lab.kinds()
    seen: list[dict[str, Any]] = []
    for _ in range(3):  # the watcher answers and talks; ada is silent
        lab.clock.now += 1.0
        lab.hub.heartbeat_tick()
        lab.hub.pong(watcher)
        seen += lab.send(watcher, {"type": "ping"})
    assert ada.port.closes[-1][0] == code  # type: ignore[attr-defined]
    assert watcher.port.closes == []  # type: ignore[attr-defined]
    lab.hub.closed(ada)  # the transport reports the close
    if grace:
        assert "ada" in lab.hub.presence("room") and lab.events == []
        lab.advance(grace)
    seen += watcher.port.take()  # type: ignore[attr-defined]
    diffs = [m for m in seen if m["type"] == "presence_diff"]
    assert diffs == [{"type": "presence_diff", "channel": "room", "joins": {},
                      "leaves": {"ada": {"connections": 0, "reason": "timeout"}}}]
    assert [(e.type, e.user, e.reason) for e in lab.events] == [
        ("presence.timeout", "ada", "timeout")]


def test_idle_moves_to_a_configured_state_on_the_heartbeat_tick_and_back() -> None:
    lab = Lab(presence_states=("here", "idle", "dnd"), presence_idle_state="idle",
              presence_idle_timeout=30.0, heartbeat_interval=1000.0)  # no pings here
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    lab.clock.now += 29.0
    assert lab.send(watcher, {"type": "ping"}) == [{"type": "pong"}]
    lab.hub.heartbeat_tick()
    assert watcher.port.take() == []  # type: ignore[attr-defined]  # 29 s: not yet
    lab.clock.now += 2.0
    lab.hub.heartbeat_tick()  # ada: 31 s without a message; the watcher: 2 s
    assert watcher.port.take() == [{  # type: ignore[attr-defined]
        "type": "presence_diff", "channel": "room", "leaves": {},
        "joins": {"ada": {"connections": 1, "state": "idle"}}, "changed": {"ada": ["state"]}}]
    lab.clock.now += 20.0
    lab.hub.heartbeat_tick()  # already idle: nothing more for ada
    assert watcher.port.take() == []  # type: ignore[attr-defined]
    lab.send(ada, {"type": "presence", "channel": "room", "state": "dnd"})
    assert [d["joins"]["ada"].get("state") for d in watcher.port.take()  # type: ignore
            if "ada" in d.get("joins", {})] == [None, "dnd"]  # woken, then its choice
    lab.send(ada, {"type": "ping"})
    assert lab.hub.presence("room")["ada"]["state"] == "dnd"
    assert [(e.type, e.state) for e in lab.events if e.type == "presence.update"] == [
        ("presence.update", "idle"), ("presence.update", "here"), ("presence.update", "dnd")]


# ---------------------------------------------------------------------------- property

USERS = ["u0", "u1", "u2", "u3"]
WINDOW = 0.05  # presence_batch_window of the batched property test
op = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(USERS)),
    st.tuples(st.just("close"), st.integers(0, 20)),
    st.tuples(st.just("unsub"), st.integers(0, 20)),
    st.tuples(st.just("state"), st.integers(0, 20), st.sampled_from(["online", "away", "busy"])),
    st.tuples(st.just("meta"), st.integers(0, 20), st.sampled_from([{}, {"a": 1}, {"b": 2}])),
    st.tuples(st.just("ping"), st.integers(0, 20)),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0, 5.0])),
    st.tuples(st.just("idle")),
    st.tuples(st.just("kick"), st.sampled_from(USERS)),
    st.tuples(st.just("watch")),
    st.tuples(st.just("read")),
)


class Watcher:
    """A subscriber that rebuilds the member list with the client's PresenceView.

    With a :class:`SlowPort` it reads only when told (:meth:`read`): a member list
    in pages then arrives a page per read, while the other steps go on.
    """

    def __init__(self, lab: Lab, user: str, port: RecordingPort | None = None) -> None:
        self.session = lab.open(user, port)
        self.view = PresenceView()
        self.seen: list[tuple[str, str, str | None]] = []
        self.feed(lab.sub(self.session))

    @property
    def complete(self) -> bool:
        return "room" in self.view.channels

    def feed(self, msgs: list[dict[str, Any]]) -> None:
        for msg in msgs:
            if msg["type"] in ("presence_state", "presence_diff", "presence_page"):
                first = not self.complete
                change = self.view.apply(msg)
                if first:  # what was there before it came is not news
                    continue
                self.seen += [("join", u, None) for u in change.joined]
                self.seen += [("leave", u, r or "left") for u, r in change.left.items()]
                self.seen += [("update", u, f) for u, fs in change.updated.items()
                              for f in fs if f != "connections"]

    def drain(self) -> None:
        self.feed(self.session.port.take())  # type: ignore[attr-defined]

    def read(self) -> None:
        if isinstance(self.session.port, SlowPort):
            self.session.port.drain()


def bus_news(lab: Lab) -> list[tuple[str, str, str | None]]:
    """The presence events since the last call, as (kind, user, reason or field)."""
    out: list[tuple[str, str, str | None]] = []
    for e in lab.events:
        if e.type == "presence.join":
            out.append(("join", e.user, None))
        elif e.type in ("presence.leave", "presence.timeout"):
            out.append(("leave", e.user, e.reason))
        else:
            out += [("update", e.user, f) for f in e.changed]
    lab.events.clear()
    return out


def without_counts(members: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {u: {k: v for k, v in info.items() if k != "connections"}
            for u, info in members.items()}


def run_step(lab: Lab, step: tuple[Any, ...], live: list[Session], watchers: list[Watcher],
             paged: bool) -> list[Session]:
    """Do one step of the property tests; return the members' live sessions."""
    kind = step[0]
    if kind == "open":
        s = lab.open(step[1])
        lab.sub(s)
        live.append(s)
    elif kind == "wait":
        lab.advance(step[1])
    elif kind == "idle":
        lab.advance(10.0)
        lab.hub.check_presence_idle()
    elif kind == "kick":
        lab.hub.kick("room", step[1])
        live = [s for s in live if "room" in s.subscriptions]
    elif kind == "watch":
        if len(watchers) == 1:
            watchers.append(Watcher(lab, "late", SlowPort() if paged else None))
    elif kind == "read":
        watchers[-1].read()
    elif kind == "window":  # the batch window ends
        lab.advance(WINDOW)
    elif live:
        s = live[step[1] % len(live)]
        if kind == "close":
            lab.hub.closed(s)
            live.remove(s)
        elif kind == "unsub":
            lab.send(s, {"type": "unsubscribe", "channel": "room"})
            live.remove(s)
        elif kind == "ping":
            lab.send(s, {"type": "ping"})
        elif kind == "state":
            lab.send(s, {"type": "presence", "channel": "room", "state": step[2]})
        else:
            lab.send(s, {"type": "presence", "channel": "room", "meta": step[2]})
    return live


def run_steps(lab: Lab, ops: list[tuple[Any, ...]], watchers: list[Watcher], paged: bool,
              check: Callable[[], None]) -> list[Session]:
    """Every step, ``check()`` after each; then the grace periods end, the late watcher
    reads everything, a last window ends, and a last check. Returns the live sessions."""
    live: list[Session] = []
    for step in ops:
        live = run_step(lab, step, live, watchers, paged)
        check()
    lab.advance(100.0)
    for _ in range(20):
        watchers[-1].read()
    lab.advance(WINDOW)
    check()
    return live


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=40), st.sampled_from([0.0, 3.0]), st.booleans(), st.booleans())
def test_rebuilt_member_list_equals_the_servers(ops: list[tuple[Any, ...]],
                                                grace: float, details: bool,
                                                paged: bool) -> None:
    """A watcher from the start and one that subscribes midway (presence_state, then
    diffs) rebuild exactly the server's member map after every step, counts
    included with presence_details (the default); without it, all but the counts.
    With details, what PresenceView.apply reports (joined, updated, left with
    reasons) is exactly the server's presence events.

    ``paged``: pages of one member each, and the midway watcher reads only on a
    "read" step, so its list arrives page by page while members join, leave and
    change meanwhile; once its last page is in, its list is exact too."""
    lab = Lab(presence_grace=grace, presence_details=details, presence_idle_timeout=10.0,
              **({"presence_page_bytes": 40} if paged else {}))
    watchers = [Watcher(lab, "watcher")]
    lab.events.clear()

    def check() -> None:
        server = lab.hub.presence("room")
        news = sorted(bus_news(lab), key=repr)
        for w in watchers:
            was_complete = w.complete
            w.drain()
            if not w.complete:  # its pages are still on their way
                assert w.view.syncing("room") and lab.hub.presence_pager.in_progress(w.session)
                continue
            if not was_complete:  # its last page came now: this step's news is in its list
                news_for_it: list[Any] | None = None
            else:
                news_for_it = [n for n in news if w is watchers[0] or n != ("join", "late", None)]
            if details:
                assert w.view.channels["room"] == server
                # the late watcher's own join is news for the first one only
                if news_for_it is not None:
                    assert sorted(w.seen, key=repr) == news_for_it
            else:
                assert without_counts(w.view.channels["room"]) == without_counts(server)
            w.seen.clear()

    live = run_steps(lab, ops, watchers, paged, check)
    assert all(w.complete for w in watchers)
    assert set(lab.hub.presence("room")) == (
        {w.session.user for w in watchers} | {s.user for s in live})


#: The steps above, and the end of a batch window (several steps merge into one diff).
batched_op = st.one_of(op, st.tuples(st.just("window")), st.tuples(st.just("window")))


def net_news(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
             reasons: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """What changed from ``before`` to ``after``, as (kind, user, reason or field): the
    news a merged diff brings (``reasons``: each user's last leave reason)."""
    news: list[tuple[str, str, str | None]] = [
        ("join", u, None) for u in after.keys() - before.keys()]
    news += [("leave", u, reasons[u]) for u in before.keys() - after.keys()]
    news += [("update", u, f) for u in before.keys() & after.keys() for f in ("state", "meta")
             if before[u].get(f) != after[u].get(f)]
    return sorted(news, key=repr)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(batched_op, max_size=40), st.sampled_from([0.0, 3.0]), st.booleans(),
       st.booleans())
# a join and a leave in one window, a member list sent in between: the leave must go out
@example([("open", "u0"), ("watch",), ("close", 0)], 0.0, True, False)
@example([("open", "u0"), ("watch",), ("read",), ("unsub", 0)], 0.0, True, True)
# a member there before leaves and comes back within the window (an update), tabs too
@example([("open", "u0"), ("window",), ("unsub", 0), ("open", "u0"), ("open", "u0"),
          ("state", 1, "away"), ("watch",), ("close", 0)], 0.0, True, False)
def test_batched_diffs_rebuild_the_servers_member_list(ops: list[tuple[Any, ...]],
                                                       grace: float, details: bool,
                                                       paged: bool) -> None:
    """The same steps with ``presence_batch_window``: each channel's changes merge into
    one diff per window (joins then leaves, leaves then joins, tabs, states, metadata,
    kicks, grace, idle moves, a watcher that subscribes or gets its pages in the middle
    of a window). At each window's end every watcher's rebuilt list is exactly the
    server's (counts included with presence_details), never a phantom member; and what
    PresenceView.apply reports is exactly the net change since the watcher's last
    check: joins, leaves with the last leave's reason, state and meta updates."""
    lab = Lab(presence_grace=grace, presence_details=details, presence_idle_timeout=10.0,
              presence_batch_window=WINDOW, **({"presence_page_bytes": 40} if paged else {}))
    timers = ManualScheduler(lab.clock)
    lab.hub.bind(timers)
    watchers = [Watcher(lab, "watcher")]
    bases: dict[int, dict[str, Any]] = {}  # each watcher's list at its last check
    reasons: dict[str, str] = {}

    def check() -> None:
        """After every step, and right after every window's end (diffs come only then)."""
        for e in lab.events:
            if e.type in ("presence.leave", "presence.timeout"):
                reasons[e.user] = e.reason
        lab.events.clear()
        server, settled = lab.hub.presence("room"), not lab.hub.presence_batch.pending
        for w in watchers:
            w.drain()
            if not w.complete:  # its pages are still on their way
                assert w.view.syncing("room") and lab.hub.presence_pager.in_progress(w.session)
                continue
            view = w.view.channels["room"]
            if id(w) not in bases:  # its list came now: what it had before is not news
                bases[id(w)], w.seen = dict(view), []
            if settled:  # no diff waits: the rebuilt list is the server's, news exact
                assert (view if details else without_counts(view)) == (
                    server if details else without_counts(server))
                if details:
                    assert sorted(w.seen, key=repr) == net_news(bases[id(w)], view, reasons)
                bases[id(w)], w.seen = dict(view), []

    lab.on_advance = lambda: timers.run_due() and check()

    live = run_steps(lab, ops, watchers, paged, check)
    assert all(w.complete for w in watchers) and not lab.hub.presence_batch.pending
    assert set(lab.hub.presence("room")) == (
        {w.session.user for w in watchers} | {s.user for s in live})


def test_presence_view_reports_joins_updates_and_leaves_with_reasons() -> None:
    view = PresenceView()
    first = view.apply({"type": "presence_state", "channel": "room",
                        "members": {"ada": {"connections": 1}}})
    assert first.joined == {"ada": {"connections": 1}} and not first.updated
    tab = view.apply({"type": "presence_diff", "channel": "room", "leaves": {},
                      "joins": {"ada": {"connections": 2}},
                      "changed": {"ada": ["connections"]}})
    assert (tab.joined, tab.updated, tab.left) == ({}, {"ada": ("connections",)}, {})
    # the earlier wire has no `changed`: the fields are found by comparing
    old = view.apply({"type": "presence_diff", "channel": "room", "leaves": {},
                      "joins": {"ada": {"connections": 2, "state": "away"}}})
    assert old.updated == {"ada": ("state",)}
    gone = view.apply({"type": "presence_diff", "channel": "room", "joins": {},
                       "leaves": {"ada": {"connections": 0, "reason": "kicked"},
                                  "nobody": {"connections": 0}}})
    assert gone.left == {"ada": "kicked"} and view.members("room") == []
    again = view.apply({"type": "presence_state", "channel": "room",
                        "members": {"bob": {"connections": 1}}})
    assert again.joined == {"bob": {"connections": 1}} and again.left == {}
    resync = view.apply({"type": "presence_state", "channel": "room", "members": {}})
    assert resync.left == {"bob": None}


def test_without_details_the_wire_is_as_before() -> None:
    """The opt-out (presence_details=False): no count updates, no leave reasons."""
    lab = Lab(presence_details=False)
    watcher = lab.open("w")
    lab.sub(watcher)
    tab1, tab2 = lab.open("ada"), lab.open("ada")
    lab.sub(tab1)
    lab.sub(tab2)
    lab.hub.closed(tab1)
    lab.hub.closed(tab2)
    diffs = watcher.port.take()  # type: ignore[attr-defined]
    assert [(d["joins"], d["leaves"]) for d in diffs] == [
        ({"ada": {"connections": 1}}, {}), ({}, {"ada": {"connections": 0}})]
    assert [e.reason for e in lab.events if e.type == "presence.leave"] == ["closed"]


@pytest.mark.parametrize("n", [1000])
@pytest.mark.timeout(600)  # 18 s of CPU under coverage: 118 s of wall-clock time at load 11
def test_presence_event_rate_1000_members_joining(n: int) -> None:
    """Not a benchmark assertion: 1000 joins reach every subscriber (n*(n-1)/2 diffs)."""
    lab = Lab()
    sessions = [lab.open(f"user{i}") for i in range(n)]
    for s in sessions:
        lab.sub(s)
    assert len(lab.hub.presence("room")) == n
    assert sum(1 for e in lab.events if e.type == "presence.join") == n


@pytest.mark.parametrize(("code", "reason"), [(4101, "timeout"), (4105, "timeout"),
                                              (4100, "closed"), (4200, "closed")])
def test_a_server_close_leaves_at_once_and_the_socket_close_leaves_nothing_twice(
        code: int, reason: str) -> None:
    lab = Lab(presence_details=True)
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    lab.kinds()
    lab.hub.close(ada, code, "bye")  # the server decides; the socket closes later
    assert ada.subscriptions == set() and "ada" not in lab.hub.presence("room")
    assert [m for m in watcher.port.take() if m["type"] == "presence_diff"] == [  # type: ignore
        {"type": "presence_diff", "channel": "room", "joins": {},
         "leaves": {"ada": {"connections": 0, "reason": reason}}}]
    kind = "presence.timeout" if reason == "timeout" else "presence.leave"
    assert lab.kinds() == [(kind, "ada")]
    assert ada.id in lab.hub.sessions  # until the transport reports the socket closed
    lab.hub.closed(ada, 1006, "")
    assert watcher.port.take() == [] and lab.kinds() == []  # type: ignore[attr-defined]
    assert ada.id not in lab.hub.sessions and ada.close_code == code


def test_a_server_close_starts_the_grace_period_at_once() -> None:
    lab = Lab(presence_grace=2.0)
    watcher, ada = lab.open("w"), lab.open("ada")
    lab.sub(watcher)
    lab.sub(ada)
    watcher.port.take()  # type: ignore[attr-defined]
    lab.hub.close(ada, 4101, "heartbeat timeout")
    assert "ada" in lab.hub.presence("room")  # held, nothing sent yet
    lab.advance(1.0)
    lab.hub.closed(ada)  # the socket closes a second later: the deadline stays
    assert watcher.port.take() == []  # type: ignore[attr-defined]
    lab.advance(1.0)
    assert [m["leaves"] for m in watcher.port.take()] == [  # type: ignore[attr-defined]
        {"ada": {"connections": 0, "reason": "timeout"}}]


def test_close_all_sends_no_leave_to_connections_it_closes() -> None:
    lab = Lab()
    sessions = [lab.open(f"u{i}") for i in range(5)]
    for s in sessions:
        lab.sub(s)
    for s in sessions:
        s.port.take()  # type: ignore[attr-defined]
    lab.kinds()
    lab.hub.close_all(1001, "server stopping")
    for s in sessions:
        assert s.port.take() == [] and s.port.closes == [(1001, "server stopping")]  # type: ignore
        assert s.subscriptions == set()
    assert lab.hub.presence("room") == {} and "room" not in lab.hub.channels
    assert sorted(u for _, u in lab.kinds()) == [f"u{i}" for i in range(5)]

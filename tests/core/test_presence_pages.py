"""Presence pages and the channel's metadata bound, on a socketless hub (issue 13, point 4).

A member list larger than a page goes to a newcomer as ``presence_page`` messages,
one per drain of its connection (flow control: a reader that stops holds at most
about two pages, never the slow-consumer bound); diffs that happen while pages are
in flight are applied by the client to the list it builds, and the rebuilt list
equals the server's. The channel's metadata, all members together, is bounded by
``max_presence_channel_meta_bytes`` (``presence_meta_full``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_lab.client.presence import PresenceView
from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.channels import Channel
from realtime_lab.core.hooks import ConnectRequest, Hooks
from realtime_lab.core.presence_sync import ChannelMembers, PresenceSync
from realtime_lab.protocol import codec, messages
from realtime_lab.testing import RecordingPort, SlowPort, TurnScheduler

OUTBOUND = 64 * 1024  # max_outbound_bytes of these tests: pages of 16 KiB
META = {"bio": "x" * 980}  # about 1000 bytes encoded


class Room:
    """A hub (no scheduler: writes happen at once) with presence members on fake ports."""

    def __init__(self, **options: Any) -> None:
        self.hub = Hub(ServerOptions(**{"max_outbound_bytes": OUTBOUND, **options}))

    def open(self, user: str, port: RecordingPort | None = None) -> Session:
        port = port or RecordingPort()
        session = self.hub.open(port, user=user, request=ConnectRequest(remote="x", user=user))
        port.take()
        return session  # type: ignore[no-any-return]

    def send(self, session: Session, msg: dict[str, Any]) -> list[dict[str, Any]]:
        self.hub.receive_text(session, json.dumps(msg))
        port: RecordingPort = session.port  # type: ignore[assignment]
        return port.take()

    def member(self, user: str, meta: dict[str, Any] | None = META) -> Session:
        session = self.open(user)
        self.send(session, {"type": "subscribe", "channel": "room"})
        if meta is not None:
            self.send(session, {"type": "presence", "channel": "room", "meta": meta})
        return session

    def fill(self, n: int) -> list[Session]:
        return [self.member(f"member{i:04d}") for i in range(n)]


def feed(view: PresenceView, msgs: list[dict[str, Any]]) -> list[str]:
    """Apply the presence messages to ``view``; return their types."""
    kinds = []
    for msg in msgs:
        if msg["type"].startswith("presence_"):
            view.apply(msg)
            kinds.append(msg["type"])
    return kinds


def test_a_small_member_list_is_one_presence_state_byte_for_byte_as_before() -> None:
    room = Room()
    room.fill(3)
    channel = room.hub.channels["room"]
    newcomer = room.open("newcomer")
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    written = b"".join(newcomer.port.writes)  # type: ignore[attr-defined]
    old = codec.encode(messages.presence_state_message(
        "room", {u: channel.member_info(u, "online") for u in channel.members}))
    assert old.encode() in written
    assert [m["type"] for m in newcomer.port.take()] == [  # type: ignore[attr-defined]
        "subscribed", "presence_state"]


def test_page_format_and_a_state_the_outbound_bound_would_refuse() -> None:
    """100 members of 1 KB metadata: 100 KB of members against a 64 KiB bound. On the
    code before pages the newcomer was closed with 4100 before it could read."""
    room = Room()
    room.fill(100)
    port = RecordingPort()
    newcomer = room.open("newcomer", port)
    msgs = room.send(newcomer, {"type": "subscribe", "channel": "room"})
    assert port.closes == [] and newcomer.is_open
    pages = [m for m in msgs if m["type"] == "presence_page"]
    assert len(pages) >= 7 and "presence_state" not in [m["type"] for m in msgs]
    assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
    assert {p["sync"] for p in pages} == {pages[0]["sync"]} and {p["v"] for p in pages} == {1}
    assert [p["more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert pages[0]["total"] == 101 and all("total" not in p for p in pages[1:])
    for page in pages:  # each page about page_bytes, never near the bound
        assert len(json.dumps(page)) < room.hub.options.page_bytes + 1200
    view = PresenceView()
    feed(view, msgs)
    assert view.channels["room"] == room.hub.presence("room")


def test_pages_go_out_as_the_connection_drains_never_all_at_once() -> None:
    room = Room()
    room.fill(200)
    port = SlowPort()
    newcomer = room.open("newcomer", port)
    view = PresenceView()
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    budget = room.hub.options.page_bytes
    drains = 0
    while True:
        # the reader has not read: at most one page waits (plus the small replies)
        assert newcomer.pending_bytes + port.buffered < 2 * budget + 1200
        feed(view, port.take())
        if "room" in view.channels:
            break
        port.drain()
        drains += 1
    assert drains >= 5 and port.closes == []
    assert view.channels["room"] == room.hub.presence("room")
    assert not room.hub.presence_pager.active


def test_joins_leaves_and_updates_while_pages_are_in_flight_are_rebuilt_exactly() -> None:
    room = Room(presence_grace=0.0)
    members = room.fill(200)
    port = SlowPort()
    newcomer = room.open("newcomer", port)
    view = PresenceView()
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    late: list[Session] = []
    step = 0
    while room.hub.presence_pager.in_progress(newcomer, "room"):
        # a member listed on a page not sent yet leaves, one already sent leaves,
        # a new member joins, one updates its state and metadata, one opens a tab
        room.hub.closed(members[199 - step])
        room.hub.closed(members[step])
        late.append(room.member(f"late{step}", {"n": step}))
        room.send(members[50 + step], {"type": "presence", "channel": "room", "state": "away",
                                       "meta": {"v": step}})
        room.member(f"member{20 + step:04d}", None)  # another tab of a listed member
        if step % 2:
            room.hub.closed(late[step - 1])  # joined after the list was made, then left
        step += 1
        feed(view, port.take())
        port.drain()
    port.drain()
    feed(view, port.take())
    assert step >= 5 and "room" in view.channels
    assert view.channels["room"] == room.hub.presence("room")


def test_leaving_the_channel_stops_its_pages_and_a_straggler_is_ignored() -> None:
    room = Room()
    room.fill(100)
    port = SlowPort()
    newcomer = room.open("newcomer", port)
    view = PresenceView()
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    first = [m for m in port.take() if m["type"] == "presence_page"]
    assert 1 <= len(first) <= 2  # what fits below the page budget: at most two pages
    feed(view, first)
    room.hub.receive_text(newcomer, '{"type":"unsubscribe","channel":"room"}')
    assert not room.hub.presence_pager.in_progress(newcomer)
    view.forget("room")
    port.drain()
    assert [m["type"] for m in port.take()] == ["unsubscribed"]
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    msgs = []
    while room.hub.presence_pager.in_progress(newcomer):
        msgs += port.take()
        port.drain()
    msgs += port.take()
    # a page of the first list arriving late is skipped: another sync
    straggler = {**first[0], "page": 3, "members": {"ghost": {"connections": 1}}}
    feed(view, [m for m in msgs if m["type"] != "presence_diff"][:2] + [straggler]
         + [m for m in msgs if m["type"] != "presence_diff"][2:])
    assert msgs[1]["sync"] != first[0]["sync"]
    assert view.channels["room"] == room.hub.presence("room")


def test_a_page_format_the_client_does_not_know_is_ignored() -> None:
    view = PresenceView()
    change = view.apply({"type": "presence_page", "channel": "room", "v": 2, "sync": 1,
                         "page": 1, "more": False, "members": {"ada": {"connections": 1}}})
    assert view.members("room") == [] and not change.joined and not view.syncing("room")


def test_several_channels_in_pages_at_once_share_the_flow() -> None:
    room = Room()
    for i in range(60):
        s = room.member(f"m{i}")
        room.send(s, {"type": "subscribe", "channel": "hall"})
    port = SlowPort()
    newcomer = room.open("newcomer", port)
    views = PresenceView()
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"hall"}')
    while room.hub.presence_pager.in_progress(newcomer):
        assert newcomer.pending_bytes + port.buffered < 2 * room.hub.options.page_bytes + 1200
        feed(views, port.take())
        port.drain()
    feed(views, port.take())
    assert views.channels["room"] == room.hub.presence("room")
    assert views.channels["hall"] == room.hub.presence("hall")


def test_the_builder_skips_members_gone_since_the_list_was_made() -> None:
    channel = Channel("room", 0.0, True)
    for user in ("ada", "bob", "cy"):
        channel.members[user] = 1
    sync = PresenceSync("room", ChannelMembers(channel, "online"), 7)
    msg, text = sync.next_message(20)  # one member per page
    assert msg["type"] == "presence_page" and json.loads(text) == msg
    assert list(msg["members"]) == ["ada"] and msg["total"] == 3
    assert ChannelMembers(channel, "online").infos(["zed", "cy"]) == {"cy": {"connections": 1}}
    del channel.members["bob"]
    msg, _ = sync.next_message(20)
    assert list(msg["members"]) == ["cy"] and msg["more"] is False and sync.done


# ---------------------------------------------------------------------- the metadata bound

def test_metadata_past_the_channel_bound_is_refused_with_presence_meta_full() -> None:
    room = Room(max_presence_channel_meta_bytes=9_500)
    members = room.fill(9)  # 9 x about 1000 bytes
    tenth = room.member("tenth", None)
    reply = room.send(tenth, {"type": "presence", "channel": "room", "meta": META, "id": 4})
    assert reply[0]["code"] == "presence_meta_full" and reply[0]["id"] == 4
    assert "max_presence_channel_meta_bytes" in reply[0]["message"]
    assert "meta" not in room.hub.presence("room")["tenth"]
    # smaller metadata fits; a member may always shrink or clear its own
    assert room.send(tenth, {"type": "presence", "channel": "room", "meta": {"a": 1},
                             "id": 5})[-1]["changed"] == ["meta"]
    assert room.send(members[0], {"type": "presence", "channel": "room",
                                  "meta": {"bio": "short"}, "id": 6})[-1]["changed"] == ["meta"]
    # a leave frees its share
    channel = room.hub.channels["room"]
    before = channel.meta_bytes
    room.hub.closed(members[1])
    assert channel.meta_bytes == before - len(codec.encode(META))
    assert room.send(tenth, {"type": "presence", "channel": "room", "meta": META,
                             "id": 7})[-1]["changed"] == ["meta"]
    assert channel.meta_bytes == sum(len(codec.encode(m)) for m in channel.metas.values())


def test_a_refused_change_changes_nothing_and_set_member_raises() -> None:
    room = Room(max_presence_channel_meta_bytes=1500)
    ada = room.member("ada")
    bob = room.member("bob", None)
    reply = room.send(bob, {"type": "presence", "channel": "room", "state": "away",
                            "meta": META, "id": 1})
    assert reply[0]["code"] == "presence_meta_full"
    assert room.hub.presence("room")["bob"] == {"connections": 1}  # state unchanged too
    from realtime_lab.errors import PresenceMetaFull
    with pytest.raises(PresenceMetaFull):
        room.hub.set_member("room", "bob", meta=META)
    assert room.hub.update_presence(bob, "room", META) is False
    assert ada.is_open and bob.is_open


def test_a_joining_members_granted_metadata_is_bounded_too() -> None:
    """Metadata from the on_presence hook (or a channel token) is refused at subscribe."""
    hooks = Hooks(on_presence=lambda s, ch, change: META if change["event"] == "join" else None)
    room = Room(max_presence_channel_meta_bytes=2500)
    room.hub.hooks = hooks
    room.member("ada", None)
    room.member("bob", None)
    cy = room.open("cy")
    reply = room.send(cy, {"type": "subscribe", "channel": "room", "id": 3})
    assert [(m["type"], m.get("code")) for m in reply] == [("error", "presence_meta_full")]
    assert "room" not in cy.subscriptions and "cy" not in room.hub.presence("room")
    # a brand-new channel with metadata above the bound is not left behind
    tiny = Room(max_presence_channel_meta_bytes=100)
    tiny.hub.hooks = hooks
    solo = tiny.open("solo")
    assert tiny.send(solo, {"type": "subscribe", "channel": "room"})[0]["code"] == \
        "presence_meta_full"
    assert "room" not in tiny.hub.channels


def test_a_msgpack_connection_gets_the_same_pages() -> None:
    """The pages are built once as a message; each connection gets them in its wire."""
    msgpack = pytest.importorskip("msgpack")
    from realtime_lab.protocol.frames import parse_frames
    from realtime_lab.protocol.wire import MSGPACK, wire_format

    room = Room()
    room.fill(100)
    json_port, binary_port = RecordingPort(), RecordingPort()
    as_json = room.open("j", json_port)
    as_binary = room.open("b", binary_port)
    as_binary.wire = wire_format(MSGPACK)
    room.send(as_json, {"type": "subscribe", "channel": "room"})
    room.hub.receive_text(as_binary, '{"type":"subscribe","channel":"room"}')
    frames, _ = parse_frames(b"".join(binary_port.writes))
    binary = [msgpack.unpackb(f.payload) for f in frames]
    pages = [m for m in binary if m["type"] == "presence_page"]
    assert len(pages) >= 7 and pages[-1]["more"] is False
    view = PresenceView()
    feed(view, binary)
    assert view.channels["room"] == room.hub.presence("room")


def test_pages_overtaking_diffs_of_a_sliced_fan_out_still_rebuild_the_list() -> None:
    """A channel above ``fanout_slice_min`` subscribers: a diff is queued to them over
    several loop turns, while a page goes to its one connection at once, so a page
    may arrive before a diff of a change it already holds. Diffs stay in the order
    of the changes and each carries the member's whole info, so applying them after
    the page ends on the server's list all the same."""
    scheduler = TurnScheduler()
    # no time for slices and no put-off flush: one slice per turn, whatever the
    # machine's speed (fanout_flush_delay counts real time)
    room = Room(fanout_slice_min=5, fanout_slice_seconds=0.0, fanout_flush_delay=0.0)
    room.hub = Hub(room.hub.options, schedule=scheduler)
    members = room.fill(150)
    scheduler.run()
    port = RecordingPort()
    newcomer = room.open("newcomer", port)
    room.hub.receive_text(newcomer, '{"type":"subscribe","channel":"room"}')
    turn = 0
    while room.hub.presence_pager.in_progress(newcomer):
        room.hub.closed(members.pop(0))  # one whose page went out
        room.hub.closed(members.pop(len(members) // 2))
        members.append(room.member(f"late{turn}", {"turn": turn}))
        room.send(members[3], {"type": "presence", "channel": "room", "meta": {"v": turn}})
        turn += 1
        scheduler.step()
    scheduler.run()
    msgs = [m for m in port.take() if m["type"].startswith("presence_")]
    last_page = max(i for i, m in enumerate(msgs) if m["type"] == "presence_page")
    assert turn >= 5 and any(m["type"] == "presence_diff" for m in msgs[last_page:])
    view = PresenceView()
    feed(view, msgs)
    assert view.channels["room"] == room.hub.presence("room")

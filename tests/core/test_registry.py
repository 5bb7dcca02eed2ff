"""ChannelRegistry on its own (core/registry.py): no hub, no presence, plain sessions."""

from __future__ import annotations

import pytest

from realtime_lab.core import ServerOptions, Session
from realtime_lab.core.authz import ChannelRule
from realtime_lab.core.channels import Channel
from realtime_lab.core.registry import ChannelRegistry
from realtime_lab.errors import BadChannel, Forbidden, PresenceMetaFull
from realtime_lab.testing import NullPort


def session(sid: str, user: str) -> Session:
    return Session(id=sid, user=user, port=NullPort(), connected_at=0.0)


def test_a_channel_is_made_by_its_first_join_and_dropped_when_empty() -> None:
    reg = ChannelRegistry(ServerOptions(presence_channels="presence-*"))
    ada, ada2 = session("1", "ada"), session("2", "ada")
    room, joined = reg.join(ada, "presence-room")
    assert joined and room.presence and reg.get("presence-room") is room
    assert reg.join(ada2, "presence-room") == (room, False)  # a second tab: no new member
    assert "presence-room" in ada.subscriptions
    assert reg.leave(ada, "presence-room") == (room, 1)
    reg.drop_if_empty(room)
    assert reg.get("presence-room") is room, "a subscriber is left"
    assert reg.leave(ada2, "presence-room") == (room, 0)
    assert "presence-room" not in ada2.subscriptions
    reg.drop_if_empty(room)
    assert reg.channels == {} and reg.leave(ada2, "presence-room") is None
    plain, _ = reg.join(ada, "lobby")
    assert not plain.presence


def test_a_refused_admission_drops_the_channel_made_for_it() -> None:
    reg = ChannelRegistry(ServerOptions())
    ada = session("1", "ada")

    def full(channel: Channel) -> None:
        raise PresenceMetaFull("no room")

    with pytest.raises(PresenceMetaFull):
        reg.join(ada, "room", admit=full)
    assert reg.channels == {} and ada.subscriptions == set()
    reg.join(session("2", "bob"), "room")
    with pytest.raises(PresenceMetaFull):
        reg.join(ada, "room", admit=full)
    assert list(reg.channels["room"].subscribers) == ["2"], "a live channel stays"


def test_metadata_outlives_the_channel_until_cleared() -> None:
    reg = ChannelRegistry(ServerOptions())
    assert reg.info("room") is None
    assert reg.set_metadata("room", {"topic": "maths", "x": 1}) == {"topic": "maths", "x": 1}
    kept = reg.info("room")
    assert kept is not None and kept["metadata"] == {"topic": "maths", "x": 1}
    assert kept["subscribers"] == 0 and "room" not in reg.channels
    channel, _ = reg.join(session("1", "ada"), "room")
    assert channel.metadata == {"topic": "maths", "x": 1}
    assert reg.set_metadata("room", {"x": None}) == {"topic": "maths"}
    assert channel.metadata == {"topic": "maths"}, "the live channel shares the kept dict"
    reg.leave(session("1", "ada"), "room")
    reg.drop_if_empty(channel)
    again, _ = reg.join(session("2", "bob"), "room")
    assert again is not channel and again.metadata == {"topic": "maths"}
    reg.clear_metadata("room")
    assert again.metadata == {} and reg.info("room") is not None  # live: counts, no metadata
    with pytest.raises(BadChannel):
        reg.set_metadata("bad name", {})


def test_counts_come_from_the_member_count_passed_in() -> None:
    reg = ChannelRegistry(ServerOptions(), count_members=lambda channel: 42)
    reg.join(session("1", "ada"), "b")
    reg.join(session("2", "bob"), "a")
    listed = reg.describe_all()
    assert [c["name"] for c in listed] == ["a", "b"]
    assert {c["members"] for c in listed} == {42} and listed[0]["subscribers"] == 1
    info = reg.info("a")
    assert info is not None and info["members"] == 42
    assert ChannelRegistry(ServerOptions()).count_members(reg.channels["a"]) == 1


def test_names_patterns_and_publish_rules() -> None:
    reg = ChannelRegistry(ServerOptions(
        publish_channels=("chat-*", "ro-*", "subs-*"),
        channel_rules=(ChannelRule("ro-*", publish="none"),
                       ChannelRule("subs-*", publish="subscribers"))))
    ada = session("1", "ada")
    with pytest.raises(BadChannel) as bad:
        reg.validate("", request_id=7)
    assert bad.value.request_id == 7
    reg.check_publish(ada, "chat-1")
    with pytest.raises(Forbidden) as other:
        reg.check_publish(ada, "news", request_id="x")
    assert other.value.request_id == "x"
    with pytest.raises(Forbidden, match="clients may not publish"):
        reg.check_publish(ada, "ro-1")
    with pytest.raises(Forbidden, match="only subscribers"):
        reg.check_publish(ada, "subs-1")
    reg.join(ada, "subs-1")
    reg.check_publish(ada, "subs-1")
    assert reg.rule("ro-1").publish == "none" and reg.rule("elsewhere").policy == "public"
    assert reg.has_presence("anything")  # presence_channels="*" by default
    assert not ChannelRegistry(ServerOptions(presence_channels=None)).has_presence("room")

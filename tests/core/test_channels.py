"""Channel: subscribers, presence members per user, hidden members, describe()."""

from __future__ import annotations

import pytest

from realtime_lab.core import Channel, ServerOptions, Session, validate_channel
from realtime_lab.errors import BadChannel
from realtime_lab.testing import NullPort


def session(sid: str, user: str) -> Session:
    return Session(id=sid, user=user, port=NullPort(), connected_at=0.0)


def test_members_count_connections_per_user() -> None:
    ch = Channel("room", 0.0, True)
    a1, a2, b = session("1", "ada"), session("2", "ada"), session("3", "bob")
    assert ch.add(a1) is True
    assert ch.add(a2) is False
    assert ch.add(b) is True
    assert ch.presence_members() == {"ada": {"connections": 2}, "bob": {"connections": 1}}
    assert ch.remove(a1) is False
    assert ch.remove(a1) is False, "removing a non-subscriber changes nothing"
    assert ch.member_info("ada") == {"connections": 1}
    assert ch.remove(a2) is True
    assert ch.member_info("ada") == {"connections": 0}
    assert ch.describe()["subscribers"] == 1 and ch.describe()["members"] == 1


def test_hidden_subscriber_is_not_a_member() -> None:
    ch = Channel("room", 0.0, True)
    ghost = session("g", "ghost")
    assert ch.add(ghost, visible=False) is False
    assert ghost.id in ch.subscribers and ch.members == {}
    assert ch.remove(ghost) is False
    assert ch.hidden == set() and ch.subscribers == {}


def test_member_meta() -> None:
    ch = Channel("room", 0.0, True)
    ada = session("1", "ada")
    ch.add(ada)
    ch.metas["ada"] = {"status": "away"}
    assert ch.member_info("ada") == {"connections": 1, "meta": {"status": "away"}}
    ch.remove(ada)
    assert "ada" not in ch.metas


@pytest.mark.parametrize("name", ["", " ", "a b", "x" * 129, "ü", "a/b", "a\x00"])
def test_validate_channel_refuses(name: str) -> None:
    with pytest.raises(BadChannel):
        validate_channel(name, ServerOptions())


def test_validate_channel_accepts() -> None:
    for name in ("a", "x" * 128, "room:1", "user@example.com", "a-b_c=d,e;f.g"):
        validate_channel(name, ServerOptions())

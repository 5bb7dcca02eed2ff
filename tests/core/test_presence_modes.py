"""Presence modes without sockets: rules, options, the policy a channel gets, the
fallback and the counts of a hub no loop drives (core/presence_modes.py)."""

from __future__ import annotations

import pytest

from realtime_lab import ChannelRule, ServerOptions
from realtime_lab.core.hub import Hub
from realtime_lab.errors import PresenceFull
from realtime_lab.testing.ports import RecordingPort


@pytest.mark.parametrize("kwargs", [{"presence": "some"}, {"over_limit": "drop"},
                                    {"presence_limit": 0}, {"presence_limit": True},
                                    {"presence_limit": 2.5}])
def test_bad_rules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ChannelRule("x-*", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"presence_mode": "list"}, {"presence_over_limit": "x"},
                                    {"presence_full_limit": 0},
                                    {"presence_count_interval": -1.0},
                                    {"presence_count_interval": float("inf")}])
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerOptions(**kwargs)  # type: ignore[arg-type]


def test_the_policy_comes_from_the_rule_then_the_options() -> None:
    hub = Hub(ServerOptions(
        channel_rules=(ChannelRule("live-*", presence="counts"),
                       ChannelRule("class-*", presence_limit=30, over_limit="refuse"),
                       ChannelRule("ticker-*", presence="off")),
        presence_channels="*", presence_full_limit=500))
    policy = hub.services.registry.presence_policy
    assert (policy("live-1").mode, policy("live-1").limit) == ("counts", 500)
    assert (policy("class-1").mode, policy("class-1").limit,
            policy("class-1").over) == ("full", 30, "refuse")
    assert policy("ticker-1").mode == "off" and not hub.services.registry.has_presence("ticker-1")
    assert policy("room").mode == "full"
    off = Hub(ServerOptions(presence_channels=None,
                            channel_rules=(ChannelRule("live-*", presence="counts"),)))
    assert off.services.registry.presence_policy("room").mode == "off"
    assert off.services.registry.presence_policy("live-1").mode == "counts"  # the rule wins


def _join(hub: Hub, user: str, channel: str) -> RecordingPort:
    port = RecordingPort()
    session = hub.open(port, user=user)
    hub.subscribe(session, channel)
    hub.flush()
    return port


def _presence(port: RecordingPort) -> list[dict[str, object]]:
    return [m for m in port.messages() if str(m["type"]).startswith("presence")]


def test_fallback_and_counts_in_a_hub_no_loop_drives() -> None:
    hub = Hub(ServerOptions(presence_full_limit=2, presence_batch_window=0))
    first = _join(hub, "a", "room")
    _join(hub, "b", "room")
    assert [m["type"] for m in _presence(first)] == ["presence_state", "presence_diff"]
    third = _join(hub, "c", "room")
    hub.flush()
    assert _presence(first)[-1] == {"type": "presence_mode", "channel": "room",
                                    "mode": "counts", "count": 3, "reason": "limit",
                                    "limit": 2}
    assert [m["type"] for m in _presence(third)] == ["presence_mode", "presence_count"]
    _join(hub, "d", "room")
    hub.flush()
    assert _presence(first)[-1] == {"type": "presence_count", "channel": "room", "count": 4}
    assert hub.presence_modes.fallbacks == 1 and len(hub.presence("room")) == 4
    assert hub.channel_list()[0]["presence_mode"] == "counts"


def test_refuse_at_the_limit_and_the_hard_cap() -> None:
    hub = Hub(ServerOptions(presence_full_limit=1, presence_over_limit="refuse",
                            max_presence_members=2,
                            channel_rules=(ChannelRule("live-*", presence="counts"),)))
    _join(hub, "a", "room")
    with pytest.raises(PresenceFull, match="presence_full_limit"):
        hub.subscribe(hub.open(RecordingPort(), user="b"), "room")
    _join(hub, "a", "live-1")
    _join(hub, "b", "live-1")
    with pytest.raises(PresenceFull, match="max_presence_members"):
        hub.subscribe(hub.open(RecordingPort(), user="c"), "live-1")

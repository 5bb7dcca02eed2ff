"""ServerOptions: defaults, validation, copies."""

from __future__ import annotations

import dataclasses
import math

import pytest

from realtime_lab.core import ServerOptions


def test_defaults() -> None:
    opts = ServerOptions()
    assert opts.heartbeat_interval == 25.0 and opts.heartbeat_timeout == 20.0
    assert opts.max_message_bytes == 64 * 1024 and opts.max_outbound_bytes == 1024 * 1024
    assert opts.max_subscriptions == 100 and opts.max_channel_length == 128
    assert opts.client_publish is True and opts.presence_channels == "*"
    assert opts.echo_to_sender is True and opts.api_token is None
    assert opts.limits() == {"max_message_bytes": 65536, "max_subscriptions": 100,
                             "max_channel_length": 128}


def test_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ServerOptions(5)  # type: ignore[misc]
    opts = ServerOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.max_subscriptions = 3  # type: ignore[misc]


def test_names_lists_every_public_option() -> None:
    names = ServerOptions.names()
    assert "_channel_re" not in names
    assert {"heartbeat_interval", "max_outbound_bytes", "api_token", "close_timeout"} <= set(names)


@pytest.mark.parametrize("name", ["heartbeat_interval", "heartbeat_timeout", "close_timeout"])
@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, "5", None, True])
def test_positive_durations(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        ServerOptions(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["max_message_bytes", "max_outbound_bytes",
                                  "max_subscriptions", "max_channel_length"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "10", None, True])
def test_positive_integers(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        ServerOptions(**{name: value})  # type: ignore[arg-type]


def test_bad_channel_pattern() -> None:
    with pytest.raises(ValueError, match="channel_pattern"):
        ServerOptions(channel_pattern="[unclosed")


def test_with_changes_revalidates_and_recompiles() -> None:
    opts = ServerOptions(channel_pattern="a+")
    changed = opts.with_changes(channel_pattern="b+", max_subscriptions=2)
    assert changed.max_subscriptions == 2 and opts.max_subscriptions == 100
    assert changed._channel_re.fullmatch("bbb") and not changed._channel_re.fullmatch("aaa")
    assert changed == ServerOptions(channel_pattern="b+", max_subscriptions=2)
    with pytest.raises(TypeError):
        opts.with_changes(no_such_option=1)
    with pytest.raises(ValueError):
        opts.with_changes(max_subscriptions=0)


@pytest.mark.parametrize("changes", [
    {"write_buffer_bytes": 0},
    {"max_connections": -1},
    {"max_connections_per_ip": True},
    {"heartbeat_load_connections": 1.5},
    {"droppable_priority": "urgent"},
    {"handshake_timeout": 0},
    {"idle_timeout": -1},
    {"heartbeat_lag_threshold": math.inf},
    {"heartbeat_min_interval": 1.0},
    {"heartbeat_max_interval": 1.0},
    {"heartbeat_min_interval": 5.0, "heartbeat_max_interval": 1.0},
    {"heartbeat_jitter": 1.0},
    {"heartbeat_jitter": -0.1},
    {"certfile": "cert.pem"},
    {"keyfile": "key.pem"},
])
def test_invalid_queue_security_and_heartbeat_options(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerOptions(**changes)  # type: ignore[arg-type]


def test_allowed_origins_normalized_to_a_tuple() -> None:
    assert ServerOptions(allowed_origins="https://a.example").allowed_origins == (
        "https://a.example",)
    assert ServerOptions(allowed_origins=["https://a", "https://b"]).allowed_origins == (  # type: ignore[arg-type]
        "https://a", "https://b")
    assert ServerOptions(droppable_priority="none").droppable_priority == "none"
    adaptive = ServerOptions(heartbeat_min_interval=1.0, heartbeat_max_interval=5.0,
                             heartbeat_jitter=0.2)
    assert adaptive.heartbeat_max_interval == 5.0

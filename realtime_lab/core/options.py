"""Server options: every limit with its default in one place (docs/reference.md lists them)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_CHANNEL_PATTERN = r"[A-Za-z0-9_\-=@,.;:]+"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Options of a realtime_lab server. All are keyword-only and have defaults.

    Attributes:
        heartbeat_interval: seconds between server pings to each connection.
        heartbeat_timeout: seconds a connection has to answer a ping before it is
            closed with close code 4101 (heartbeat timeout).
        max_message_bytes: largest inbound message; larger frames close the
            connection with 1009 (message too big).
        max_outbound_bytes: bytes that may wait to be sent to one connection; a
            client that stops reading past this is closed with 4100 (slow consumer).
        max_subscriptions: channels one connection may be subscribed to at once.
        max_channel_length: longest channel name, in characters.
        channel_pattern: regular expression a whole channel name must match.
        client_publish: whether clients may publish to channels.
        presence_channels: glob (fnmatch) of channels that track presence and send
            presence_state / presence_diff; None turns presence off.
        echo_to_sender: whether a publisher subscribed to the channel receives its
            own message.
        api_token: bearer token for ``POST /api/channels/{name}/messages``; None
            disables the endpoint.
        close_timeout: seconds ``stop()`` waits for clients to close cleanly.
    """

    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 20.0
    max_message_bytes: int = 64 * 1024
    max_outbound_bytes: int = 1024 * 1024
    max_subscriptions: int = 100
    max_channel_length: int = 128
    channel_pattern: str = DEFAULT_CHANNEL_PATTERN
    client_publish: bool = True
    presence_channels: str | None = "*"
    echo_to_sender: bool = True
    api_token: str | None = None
    close_timeout: float = 2.0
    _channel_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "heartbeat_timeout", "close_timeout"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value < math.inf):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        for name in ("max_message_bytes", "max_outbound_bytes", "max_subscriptions",
                     "max_channel_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        try:
            compiled = re.compile(self.channel_pattern)
        except re.error as exc:
            raise ValueError(f"channel_pattern is not a valid regular expression: {exc}") from None
        object.__setattr__(self, "_channel_re", compiled)

    def with_changes(self, **changes: Any) -> ServerOptions:
        """A copy with some options changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def limits(self) -> dict[str, int]:
        """The limits a client is told about in the welcome message."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "max_subscriptions": self.max_subscriptions,
            "max_channel_length": self.max_channel_length,
        }

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

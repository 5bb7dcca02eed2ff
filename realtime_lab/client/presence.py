"""Client-side presence: rebuild each channel's member list from state and diffs."""

from __future__ import annotations

from typing import Any


class PresenceView:
    """Members per channel, as the server announced them."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, dict[str, Any]]] = {}

    def apply(self, msg: dict[str, Any]) -> None:
        """Apply a ``presence_state`` or ``presence_diff`` message."""
        channel = msg["channel"]
        if msg["type"] == "presence_state":
            self.channels[channel] = dict(msg["members"])
            return
        members = self.channels.setdefault(channel, {})
        for user in msg.get("leaves", {}):
            members.pop(user, None)
        for user, info in msg.get("joins", {}).items():
            members[user] = info

    def members(self, channel: str) -> list[str]:
        return sorted(self.channels.get(channel, {}))

    def forget(self, channel: str) -> None:
        self.channels.pop(channel, None)

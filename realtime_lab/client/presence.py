"""Client-side presence: rebuild each channel's member list from state and diffs.

Applying a ``presence_diff`` is: remove its ``leaves``, then put its ``joins``
(a join for a known user replaces that user's info). This gives the server's
member map with either wire (docs/presence.md): with ``presence_details`` (the
server default) a member that stays but changes (a tab opened or closed, a new
state or metadata) comes in ``joins`` with its whole info and in ``changed``;
leaves carry a ``reason``. :meth:`PresenceView.apply` also says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PresenceChange:
    """What one presence message changed in a channel's member list."""

    channel: str
    #: user -> info, for users who were not listed before.
    joined: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: user -> the fields that changed (``connections``, ``state``, ``meta``).
    updated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: user -> leave reason (``closed``, ``timeout``, ``kicked``; None: unsubscribed,
    #: or gone while this client was not subscribed).
    left: dict[str, str | None] = field(default_factory=dict)


_FIELDS = ("connections", "state", "meta")


def _diff_fields(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f for f in _FIELDS if before.get(f) != after.get(f))


class PresenceView:
    """Members per channel, as the server announced them."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, dict[str, Any]]] = {}

    def apply(self, msg: dict[str, Any]) -> PresenceChange:
        """Apply a ``presence_state`` or ``presence_diff`` message; return what changed."""
        channel = msg["channel"]
        change = PresenceChange(channel)
        before = self.channels.get(channel, {})
        if msg["type"] == "presence_state":
            members = self.channels[channel] = dict(msg["members"])
            for user in before.keys() - members.keys():
                change.left[user] = None
            joins: dict[str, dict[str, Any]] = members
            hints: dict[str, Any] = {}
        else:
            members = self.channels.setdefault(channel, {})
            for user, info in msg.get("leaves", {}).items():
                if members.pop(user, None) is not None:
                    change.left[user] = (info or {}).get("reason")
            joins = msg.get("joins", {})
            hints = msg.get("changed") or {}
        for user, info in joins.items():
            known = before.get(user) if msg["type"] == "presence_state" else members.get(user)
            if known is None or user in change.left:
                change.joined[user] = info
            else:
                fields = tuple(hints.get(user) or _diff_fields(known, info))
                if fields:
                    change.updated[user] = fields
            members[user] = info
        return change

    def members(self, channel: str) -> list[str]:
        return sorted(self.channels.get(channel, {}))

    def forget(self, channel: str) -> None:
        self.channels.pop(channel, None)

"""Channels: name validation, subscribers, and per-channel presence members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from realtime_lab.errors import BadChannel

if TYPE_CHECKING:
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.session import Session


def validate_channel(name: str, options: ServerOptions) -> None:
    """Raise :class:`BadChannel` unless ``name`` is an allowed channel name."""
    if not name:
        raise BadChannel("channel name must not be empty")
    if len(name) > options.max_channel_length:
        raise BadChannel(
            f"channel name is {len(name)} characters; the limit is {options.max_channel_length}"
        )
    if options._channel_re.fullmatch(name) is None:
        raise BadChannel(
            f"channel name {name!r} does not match the allowed pattern {options.channel_pattern!r}"
        )


@dataclass(eq=False, slots=True)
class Channel:
    """A channel: its subscribers (by session id) and presence members (by user)."""

    name: str
    created_at: float
    presence: bool
    subscribers: dict[str, Session] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    metadata: dict[str, object] = field(default_factory=dict)
    metas: dict[str, dict[str, object]] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)

    def add(self, session: Session, *, visible: bool = True) -> bool:
        """Add a subscriber; return True when its user is a new presence member.

        ``visible=False`` (an on_presence veto) subscribes without presence.
        """
        self.subscribers[session.id] = session
        if not visible:
            self.hidden.add(session.id)
            return False
        count = self.members.get(session.user, 0)
        self.members[session.user] = count + 1
        return count == 0

    def remove(self, session: Session) -> bool:
        """Remove a subscriber; return True when its user left (no connection remains)."""
        if self.subscribers.pop(session.id, None) is None:
            return False
        if session.id in self.hidden:
            self.hidden.discard(session.id)
            return False
        count = self.members.get(session.user, 0) - 1
        if count <= 0:
            self.members.pop(session.user, None)
            self.metas.pop(session.user, None)
            return True
        self.members[session.user] = count
        return False

    def member_info(self, user: str) -> dict[str, object]:
        meta = self.metas.get(user)
        info: dict[str, object] = {"connections": self.members.get(user, 0)}
        if meta:
            info["meta"] = meta
        return info

    def presence_members(self) -> dict[str, dict[str, object]]:
        return {user: self.member_info(user) for user in self.members}

    def info(self) -> dict[str, object]:
        """:meth:`describe` plus the custom metadata dict (``GET /api/channels/{name}``)."""
        return {**self.describe(), "metadata": dict(self.metadata)}

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "subscribers": len(self.subscribers),
            "members": len(self.members),
            "messages": self.messages,
            "presence": self.presence,
            "created_at": self.created_at,
        }

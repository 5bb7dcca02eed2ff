"""Channels: name validation, subscribers, and per-channel presence members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from realtime_lab.errors import BadChannel

if TYPE_CHECKING:
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.session import Session

#: Leave reasons (``reason`` in presence leaves and in presence.leave events): the client
#: unsubscribed, its connection closed, timed out, or the server kicked it.
LEFT, CLOSED, TIMEOUT, KICKED = "left", "closed", "timeout", "kicked"


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
    #: Member states other than the default (core/presence.py).
    states: dict[str, str] = field(default_factory=dict)
    #: Members in their grace period: user -> (deadline, leave reason).
    grace: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: Members moved to the idle state: user -> the state to give back.
    idle: dict[str, str] = field(default_factory=dict)
    #: Encoded size of each member's metadata, and their sum
    #: (``max_presence_channel_meta_bytes``; core/presence.py).
    meta_sizes: dict[str, int] = field(default_factory=dict)
    meta_bytes: int = 0
    #: ``full`` or ``counts`` (a presence channel; core/presence_modes.py), ``off``.
    presence_mode: str = "full"

    def add(self, session: Session, *, visible: bool = True) -> bool:
        """Add a subscriber; return True when its user is a new presence member.

        ``visible=False`` (an on_presence veto) subscribes without presence. A
        member in its grace period is taken over: its held count becomes this
        connection (not a new member, count unchanged).
        """
        self.subscribers[session.id] = session
        if not visible:
            self.hidden.add(session.id)
            return False
        if self.grace.pop(session.user, None) is not None:
            return False
        count = self.members.get(session.user, 0)
        self.members[session.user] = count + 1
        return count == 0

    def release(self, session: Session) -> int:
        """Remove a subscriber; return its user's remaining connections (-1: not a member).

        At 0 the member is still listed: the caller drops it (:meth:`drop_member`)
        or holds it for a grace period.
        """
        if self.subscribers.pop(session.id, None) is None:
            return -1
        if session.id in self.hidden:
            self.hidden.discard(session.id)
            return -1
        count = self.members.get(session.user, 0) - 1
        if count > 0:
            self.members[session.user] = count
            return count
        self.members[session.user] = 1  # held as it was announced until dropped
        return 0

    def drop_member(self, user: str) -> None:
        """Forget member ``user`` (count, metadata, state)."""
        self.members.pop(user, None)
        self.put_meta(user, None, 0)
        self.states.pop(user, None)
        self.idle.pop(user, None)
        self.grace.pop(user, None)

    def remove(self, session: Session) -> bool:
        """Remove a subscriber; return True when its user left (no connection remains)."""
        if self.release(session) != 0:
            return False
        self.drop_member(session.user)
        return True

    def put_meta(self, user: str, meta: dict[str, object] | None, size: int) -> None:
        """Set (or, with None or ``{}``, clear) ``user``'s metadata of encoded ``size``."""
        self.meta_bytes -= self.meta_sizes.pop(user, 0)
        if meta:
            self.metas[user] = meta
            self.meta_sizes[user] = size
            self.meta_bytes += size
        else:
            self.metas.pop(user, None)

    def state_of(self, user: str, default: str) -> str:
        return self.states.get(user, default)

    def set_state(self, user: str, state: str, default: str) -> None:
        if state == default:
            self.states.pop(user, None)
        else:
            self.states[user] = state

    def member_info(self, user: str, default_state: str | None = None) -> dict[str, object]:
        """``{"connections": n}`` plus ``state`` (when not the default) and ``meta``."""
        meta = self.metas.get(user)
        info: dict[str, object] = {"connections": self.members.get(user, 0)}
        state = self.states.get(user)
        if state is not None and state != default_state:
            info["state"] = state
        if meta:
            info["meta"] = meta
        return info

    def presence_members(self, default_state: str | None = None) -> dict[str, dict[str, object]]:
        return {user: self.member_info(user, default_state) for user in self.members}

    def info(self, members: int | None = None) -> dict[str, object]:
        """:meth:`describe` plus the custom metadata dict (``GET /api/channels/{name}``)."""
        return {**self.describe(members), "metadata": dict(self.metadata)}

    def describe(self, members: int | None = None) -> dict[str, object]:
        """Counts; ``members``: the presence member count (default: this channel's own)."""
        return {
            "name": self.name,
            "subscribers": len(self.subscribers),
            "members": len(self.members) if members is None else members,
            "messages": self.messages,
            "presence": self.presence,
            "presence_mode": self.presence_mode if self.presence else "off",
            "created_at": self.created_at,
        }

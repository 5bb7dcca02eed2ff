"""A crowded presence channel without sockets, for tests (silent members).

:class:`SilentMembers` adds members to one channel of a running hub (a
:class:`~realtime_lab.server.LabServer`'s ``hub`` or a socketless
:class:`~realtime_lab.core.hub.Hub`): each subscribes through the hub's inbound
path on a :class:`~realtime_lab.testing.ports.NullPort`, gets its metadata with
:meth:`Hub.set_member <realtime_lab.core.presence.Presence.set_member>`, and is then
marked closing, so that the hub writes nothing more to it. A thousand members
then cost a second of set-up instead of the N^2/2 presence diffs they would
send one another: what is under test is the connection that joins them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.errors import ProtocolError
from realtime_lab.testing.ports import NullPort

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub


class SilentMembers:
    """Silent presence members of ``channel`` on ``hub``; ``refused``: user -> error code
    of a metadata change the hub refused (``presence_meta_full``...)."""

    def __init__(self, hub: Hub, channel: str = "room") -> None:
        self.hub = hub
        self.channel = channel
        self.sessions: dict[str, Session] = {}
        self.refused: dict[str, str] = {}

    def join(self, user: str, meta: dict[str, Any] | None = None) -> Session:
        """Add one connection of ``user`` (a member, or another tab of one)."""
        hub = self.hub
        session: Session = hub.open(NullPort(), user=user,
                                    request=ConnectRequest(remote="silent", user=user))
        hub.receive_text(session, json.dumps({"type": "subscribe", "channel": self.channel}))
        if meta is not None:
            try:
                hub.set_member(self.channel, user, meta=meta)
            except ProtocolError as err:
                self.refused[user] = err.code
        session.state = ConnectionState.CLOSING  # the hub writes nothing more to it
        self.sessions[user] = session
        return session

    def fill(self, users: Iterable[str], meta: dict[str, Any] | None = None) -> None:
        for user in users:
            self.join(user, meta)

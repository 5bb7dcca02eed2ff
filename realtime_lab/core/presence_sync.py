"""A new subscriber's member list: one ``presence_state``, or pages sent as it drains.

The one builder of the initial member list, for a single server (the hub's
channel) and for a cluster (broker/node.py: the cluster-wide members), so that
both send the same wire (docs/protocol.md, "Presence pages"):

* a list whose encoded members fit in one page (``ServerOptions.page_bytes``,
  64 KiB by default) goes out as one ``presence_state``, byte for byte as before;
* a larger one as ``presence_page`` messages, ``{"type": "presence_page",
  "channel", "v": 1, "sync", "page", "more", "total" (page 1 only), "members"}``.

Flow control: the ``presence_state`` or the first page is queued right after
``subscribed``; each later page is built and queued only while what waits for
the connection (its queue plus the transport's backlog) is below one page, so a
member list of any size reaches a connection that reads, and one that stops
reading holds at most about two pages; the slow-consumer bound
(``max_outbound_bytes``, at least four pages) never sees the list as one frame.

Exactness: the user ids are listed when the first page is built, and each page
carries its members' info as they are *when that page is built*; every change
after that reaches the connection as a ``presence_diff`` queued after the page,
in the same (high) priority lane. A client that applies the diffs to the list
it is building and merges each page into it ends with the server's list.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from realtime_lab.core.outbound import Priority
from realtime_lab.core.session import ConnectionState
from realtime_lab.protocol import codec, messages

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.session import Session

#: Version of the ``presence_page`` format (its ``v`` field).
PAGE_VERSION = 1


class MemberSource(Protocol):
    """Where a member list comes from: the hub's channel, or a cluster node's view."""

    def users(self) -> list[str]:
        """The members now, in a stable order."""

    def infos(self, users: list[str]) -> dict[str, dict[str, Any]]:
        """The info now of those of ``users`` who are still members, in their order."""


class ChannelMembers:
    """The members of one channel of this server (the single-server source)."""

    __slots__ = ("channel", "default_state")

    def __init__(self, channel: Channel, default_state: str) -> None:
        self.channel = channel
        self.default_state = default_state

    def users(self) -> list[str]:
        return list(self.channel.members)

    def infos(self, users: list[str]) -> dict[str, dict[str, Any]]:
        members, info, default = self.channel.members, self.channel.member_info, self.default_state
        return {user: info(user, default) for user in users if user in members}


#: A JSON string as the codec writes it (protocol/codec.py: UTF-8, not ASCII-escaped).
_string = json.JSONEncoder(ensure_ascii=False).encode


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


class PresenceSync:
    """One member list on its way to one connection: the users listed at the start and
    how far the pages have got."""

    __slots__ = ("channel", "index", "page", "source", "sync", "users")

    def __init__(self, channel: str, source: MemberSource, sync: int) -> None:
        self.channel = channel
        self.source = source
        self.sync = sync
        self.users: list[str] | None = None  # listed when the first message is built
        self.index = 0
        self.page = 0

    @property
    def done(self) -> bool:
        return self.users is not None and self.index >= len(self.users)

    def next_message(self, budget: int) -> tuple[dict[str, Any], str]:
        """The next message and its JSON text: the whole list as ``presence_state``
        when it fits in ``budget`` bytes at the first call, else the next page (at
        least one member, at most about ``budget`` bytes of members)."""
        first = self.users is None
        users = self.users = self.source.users() if self.users is None else self.users
        members, body = self._take(users, budget)
        name = _string(self.channel)
        if first and self.done:
            return (messages.presence_state_message(self.channel, members),
                    f'{{"type":"presence_state","channel":{name},"members":{body}}}')
        self.page += 1
        head: dict[str, Any] = {"type": "presence_page", "channel": self.channel,
                                "v": PAGE_VERSION, "sync": self.sync, "page": self.page,
                                "more": not self.done}
        if self.page == 1:
            head["total"] = len(users)
        text = codec.encode(head)[:-1] + f',"members":{body}}}'
        head["members"] = members
        return head, text

    def _take(self, users: list[str], budget: int) -> tuple[dict[str, Any], str]:
        """The next members, about ``budget`` bytes of them (at most a quarter more),
        and their encoded object.

        Encoded a chunk at a time (one C-speed ``json`` call per chunk): a small
        first chunk gives the average member's size, the next chunk is sized to fill
        the page; a chunk that would pass the page's hard limit is taken again
        smaller. A list that fits costs about what encoding it whole did before.
        """
        infos = self.source.infos
        hard = budget + budget // 4
        members: dict[str, Any] = {}
        bodies: list[str] = []
        used, avg, i, n = 2, 0.0, self.index, len(users)
        while i < n:
            room = budget - used
            if members and room < avg:
                break  # the page is full
            k = min(n - i, max(1, int(room / avg)) if avg else PROBE)
            chunk = infos(users[i:i + k])  # without who left since the list was made
            if not chunk:
                i += k
                continue
            text = codec.encode(chunk)
            size = _size(text) - 1  # its members, and a comma before them
            if used + size > hard and (members or len(chunk) > 1):
                if len(chunk) == 1:
                    break
                avg = size / len(chunk)  # then room / avg < len(chunk): a smaller chunk
                continue
            members.update(chunk)
            bodies.append(text[1:-1])
            used += size
            avg = (used - 2) / len(members)
            i += k
        self.index = i
        return members, "{" + ",".join(bodies) + "}"


#: Members in the first chunk of a message, to learn the average member's size.
PROBE = 16


SendPage = Callable[["Session", dict[str, Any], str, Priority], bool]
AwaitDrain = Callable[["Session"], None]


class PresencePager:
    """The member lists on their way to connections, each sent as its connection drains.

    The hub calls :meth:`start` when a connection subscribes to a presence channel,
    :meth:`pump` after each write to a connection and when its transport has
    drained, and :meth:`cancel` when it leaves a channel or closes.
    """

    def __init__(self, options: ServerOptions, send: SendPage, await_drain: AwaitDrain) -> None:
        self._options = options
        self._send = send
        self._await_drain = await_drain
        self._syncs: dict[str, list[PresenceSync]] = {}  # session id -> lists in flight
        #: Whether any member list is on its way (a plain attribute: read on every write).
        self.active = False
        self._busy: set[str] = set()
        self._ids = itertools.count(1)
        #: Pages sent since the server started (``presence_state`` not counted).
        self.pages = 0

    def in_progress(self, session: Session, channel: str | None = None) -> bool:
        """Whether a member list (of ``channel``, or any) is on its way to ``session``."""
        syncs = self._syncs.get(session.id, ())
        return any(channel is None or s.channel == channel for s in syncs)

    def start(self, session: Session, channel: str, source: MemberSource) -> None:
        """Send ``source``'s member list of ``channel`` to ``session``: the
        ``presence_state`` or the first page now (right after ``subscribed``, as
        before pages), the next pages as the connection drains."""
        sync = PresenceSync(channel, source, next(self._ids))
        if not self._emit(session, sync) or sync.done:
            return
        self._syncs.setdefault(session.id, []).append(sync)
        self.active = True
        self.pump(session)

    def _emit(self, session: Session, sync: PresenceSync) -> bool:
        """Build and queue ``sync``'s next message; False when the connection is closing."""
        message, text = sync.next_message(self._options.page_bytes)
        if message["type"] == "presence_page":
            self.pages += 1
        return self._send(session, message, text, Priority.HIGH)

    def cancel(self, session: Session, channel: str | None = None) -> None:
        """Stop sending ``channel``'s member list (or all of them) to ``session``."""
        syncs = self._syncs.get(session.id)
        if syncs is None:
            return
        syncs[:] = [s for s in syncs if channel is not None and s.channel != channel]
        if not syncs:
            self._forget(session)

    def pump(self, session: Session) -> None:
        """Queue pages for ``session`` while what waits for it is below one page."""
        syncs = self._syncs.get(session.id)
        if syncs is None or session.id in self._busy:
            return
        if session.state is not ConnectionState.OPEN:
            self._forget(session)
            return
        budget = self._options.page_bytes
        self._busy.add(session.id)
        try:
            while syncs:
                backlog = session.backlog = session.port.buffered_bytes()
                if session.pending.nbytes + backlog >= budget:
                    if not session.pending:  # nothing queued will call us: the drain will
                        self._await_drain(session)
                    return
                sync = syncs[0]
                sent = self._emit(session, sync)
                if sync.done:
                    syncs.pop(0)
                if not sent:
                    syncs.clear()  # the connection is closing
        finally:
            self._busy.discard(session.id)
            if not syncs:
                self._forget(session)

    def _forget(self, session: Session) -> None:
        self._syncs.pop(session.id, None)
        self.active = bool(self._syncs)

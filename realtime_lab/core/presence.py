"""Presence done right: states, metadata, count updates, grace period, leave reasons.

:class:`PresenceService` (``hub.services.presence``; docs/presence.md) owns the
presence of the hub: the changes clients and the server make, the diffs (through
its :class:`~realtime_lab.core.presence_batch.PresenceBatcher`, the one way a diff
reaches a channel's local subscribers), the grace period (a timer on the hub's
scheduler), the idle state, kicks, and the one place every reader asks for the
members and their counts (``Hub.presence``, ``Hub.channel_list``,
``Hub.channel_info``, so ``server.presence()``, the widgets and the HTTP API):
this server's members, or, with a broker, the cluster's (``cluster``, the hub's
backplane, ``realtime_lab.broker.BrokerBackplane``), where every change made here
goes to the other nodes and comes back as a diff through the same batcher.

Wire: every change of a member that stays is a ``presence_diff`` whose ``joins``
holds the member's whole new info (Phoenix semantics: a join for a known key
replaces its info) and whose ``changed`` maps the user to the fields that changed
(``connections``, ``state``, ``meta``). A real join has no ``changed`` entry.

Hooks: a change a client asks for (its ``presence`` message, or
:meth:`PresenceService.update_presence` on its behalf) runs the ``on_presence`` hook;
changes the server makes itself (:meth:`PresenceService.set_member`,
:meth:`PresenceService.set_presence`, the idle timeout) do not.

Grace period: when a member's last connection closes, the member is kept (info
frozen, nothing sent) for ``presence_grace`` seconds. A connection of that user
subscribing again within it takes the member over silently; otherwise the leave
(reason ``closed`` or ``timeout``) goes out when the grace ends.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from realtime_lab.core import events as ev
from realtime_lab.core.channels import KICKED, LEFT, TIMEOUT, Channel
from realtime_lab.core.hooks import HookResult, Hooks, MaybeAwaitable, refused
from realtime_lab.core.outbound import Priority
from realtime_lab.core.presence_batch import PresenceBatcher
from realtime_lab.core.requests import Answers, Request
from realtime_lab.core.session import Session
from realtime_lab.errors import (
    BadPresenceState,
    NotSubscribed,
    PresenceMetaFull,
    PresenceMetaTooLarge,
    PresenceRefused,
    ProtocolError,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.values import PRESENCE_META_DEPTH, check_value

if TYPE_CHECKING:
    from realtime_lab.core.backplane import Cluster
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.outbox import Outbox
    from realtime_lab.core.ports import Clock, Scheduler, Timer
    from realtime_lab.core.presence_modes import PresenceModes
    from realtime_lab.core.registry import ChannelRegistry

log = logging.getLogger("realtime_lab.core")

#: ``leave(session, channel, reason)``: unsubscribe one connection (the hub's membership).
Leave = Callable[[Session, str, str], None]


class PresenceService:
    """Member states and metadata, count updates, grace period, kick, idle presence,
    and the members every reader sees (``hub.services.presence``)."""

    def __init__(self, options: ServerOptions, *, registry: ChannelRegistry, outbox: Outbox,
                 clock: Clock, bus: EventBus, hooks: Hooks, scheduler: Scheduler,
                 answers: Answers, leave: Leave) -> None:
        self.options = options
        self.registry = registry
        self.channels = registry.channels
        self.outbox = outbox
        self.clock = clock
        self.bus = bus
        self.hooks = hooks
        self.scheduler = scheduler
        self.answers = answers
        self._leave = leave
        #: The other nodes (the hub's backplane when it has a broker; ``Hub.use_backplane``).
        self.cluster: Cluster | None = None
        #: Presence diffs merged per channel over ``presence_batch_window``
        #: (core/presence_batch.py): the one way a diff reaches local subscribers.
        self.batch = PresenceBatcher(options.presence_batch_window, self._send_diff,
                                     details=options.presence_details,
                                     max_bytes=options.page_bytes)
        #: Users with members moved to the idle state: user -> channel names.
        self.idle_users: dict[str, set[str]] = {}
        #: channel -> ids of sessions whose member list is not sent yet (a subscribe
        #: waiting for the broker): diffs skip them, the list they get is newer.
        self._unlisted: dict[str, set[str]] = {}
        self._grace_timer: Timer | None = None
        #: The channels' presence modes (core/presence_modes.py; set by the hub): a
        #: channel not in full mode gets counts instead of diffs.
        self.modes: PresenceModes | None = None

    def bind(self, scheduler: Scheduler) -> None:
        """Run grace timers and batch windows on ``scheduler`` (``Hub.bind``)."""
        self.scheduler = scheduler
        self.batch.bind(scheduler)

    # ------------------------------------------------------------------ member lists

    def unlisted(self, name: str, session: Session) -> None:
        """``session`` joined ``name`` and gets its member list later (with a broker,
        once the node has the channel): until :meth:`listed`, no diff of ``name``
        goes to it (the list it gets is built after them: a diff first would make
        a client list a partial set of members)."""
        self._unlisted.setdefault(name, set()).add(session.id)

    def listed(self, name: str, session: Session) -> None:
        """``session``'s member list of ``name`` is sent (or it left): diffs reach it."""
        waiting = self._unlisted.get(name)
        if waiting is not None:
            waiting.discard(session.id)
            if not waiting:
                del self._unlisted[name]

    # ------------------------------------------------------------------ reads

    def members(self, name: str) -> dict[str, dict[str, object]]:
        """The members of channel ``name`` and their info: the cluster's with a broker
        (for a channel this node has subscribers of), else this server's."""
        if self.cluster is not None:
            members = self.cluster.presence(name)
            if members is not None:
                return members
        channel = self.channels.get(name)
        return channel.presence_members(self.options.presence_states[0]) if channel else {}

    def counts(self, name: str) -> tuple[int, int]:
        """``(subscribers, members)`` of channel ``name``, cluster-wide with a broker."""
        if self.cluster is not None:
            counts = self.cluster.counts(name)
            if counts is not None:
                return counts
        channel = self.channels.get(name)
        return (len(channel.subscribers), len(channel.members)) if channel else (0, 0)

    def count(self, name: str) -> int:
        """How many members channel ``name`` has (cluster-wide with a broker)."""
        return self.counts(name)[1]

    def with_counts(self, desc: dict[str, object]) -> dict[str, object]:
        """A channel's description (``ChannelRegistry.describe``/``info``) with the
        cluster's subscriber and member counts when there is a broker (this node's
        share in ``local_subscribers`` and ``local_members``, as ``GET /api/channels``)."""
        cluster = self.cluster
        counts = cluster.counts(str(desc["name"])) if cluster is not None else None
        if counts is not None:
            desc.update(local_subscribers=desc["subscribers"], local_members=desc["members"],
                        subscribers=counts[0], members=counts[1])
        return desc

    # ------------------------------------------------------------------ client changes

    def presence_message(self, request: Request,
                         msg: messages.SetPresence) -> MaybeAwaitable[None]:
        """Handle a client's ``presence`` message: :meth:`request_presence`, then the reply.

        The reply (when the message has an ``id``) is
        ``{"type": "presence", "channel": ..., "id": ..., "changed": [...]}``;
        a refusal is an ``error`` with the message's ``id``. Returns None or an
        awaitable (an async ``on_presence`` hook).
        """
        def reply(changed: list[str] | None) -> None:
            if request.id is not None:
                request.reply({"type": "presence", "channel": msg.channel, "id": request.id,
                               "changed": changed or []})

        result = self._request_presence(request, msg.channel, state=msg.state, meta=msg.meta)
        return request.then(result, reply)

    def request_presence(self, session: Session, name: str, *, state: str | None = None,
                         meta: dict[str, Any] | None = None) -> MaybeAwaitable[list[str] | None]:
        """A change ``session`` asks for: check it, run ``on_presence``, apply the verdict.

        The hook gets ``{"event": "update", "state": ..., "meta": ..., "changed":
        [...]}`` (the member's state and metadata as they would be after the change,
        and the fields asked for). ``None``/``True`` apply the change as asked; a
        dict applies it with the dict as the metadata; ``False``/``Refuse`` raise
        :class:`PresenceRefused` (or the ``Refuse`` code). Raises
        :class:`NotSubscribed`, :class:`BadPresenceState` and
        :class:`PresenceMetaTooLarge` before the hook runs; a hook that fails raises
        ``hook_failed`` / ``hook_timeout``. Returns the changed fields (or an
        awaitable of them); nothing changes for a connection that is not a member
        (``[]``) or that closed while the hook ran (None).
        """
        return self._request_presence(Request(session, None, "presence", self.answers), name,
                                      state=state, meta=meta)

    def _request_presence(self, request: Request, name: str, *, state: str | None,
                          meta: dict[str, Any] | None) -> MaybeAwaitable[list[str] | None]:
        session = request.session
        channel = self.channels.get(name)
        if channel is None or session.id not in channel.subscribers:
            raise NotSubscribed(f"not subscribed to {name!r}")
        if not channel.presence or session.id in channel.hidden:
            return []
        self._check_change(state, meta)
        if self.hooks.on_presence is None:
            return self.set_presence(session, name, state=state, meta=meta)
        default = self.options.presence_states[0]
        user = session.user
        change = {
            "event": "update",
            "state": state if state is not None else channel.state_of(user, default),
            "meta": dict(meta if meta is not None else channel.metas.get(user) or {}),
            "changed": [f for f, v in (("state", state), ("meta", meta)) if v is not None],
        }
        verdict = self.hooks.run("on_presence", session, name, change)
        return request.then(verdict, lambda v: self._apply_verdict(session, name, state, meta,
                                                                   v))

    def _apply_verdict(self, session: Session, name: str, state: str | None,
                       meta: dict[str, Any] | None, verdict: HookResult) -> list[str]:
        refusal = refused(verdict)
        if refusal is not None:
            raise refusal.error(PresenceRefused)
        if isinstance(verdict, dict):
            meta = verdict
        return self.set_presence(session, name, state=state, meta=meta)

    def update_presence(self, session: Session, name: str, meta: dict[str, Any] | None = None,
                        *, state: str | None = None) -> MaybeAwaitable[bool]:
        """Server side, on behalf of ``session``: the change its ``presence`` message
        would make, through the ``on_presence`` hook (:meth:`request_presence`).

        Returns True when applied, False when the hook vetoed it or failed (or an
        awaitable of that). Raises :class:`NotSubscribed`, :class:`BadPresenceState`
        and :class:`PresenceMetaTooLarge` like :meth:`set_member`.
        """
        channel = self.channels.get(name)
        if channel is None or session.id not in channel.subscribers:
            raise NotSubscribed(f"not subscribed to {name!r}")
        if not channel.presence or session.id in channel.hidden:
            return False
        self._check_change(state, meta)
        try:
            result = self.request_presence(session, name, state=state, meta=meta)
        except ProtocolError:
            return False
        if inspect.isawaitable(result):
            return _applied(result)
        return True

    def _check_change(self, state: str | None, meta: dict[str, Any] | None) -> None:
        """Raise :class:`BadPresenceState` / :class:`PresenceMetaTooLarge` /
        :class:`~realtime_lab.errors.BadValue` for a bad change."""
        opts = self.options
        if state is not None and state not in opts.presence_states:
            raise BadPresenceState(
                f"state {state!r} is not one of {', '.join(opts.presence_states)}")
        if meta is not None:
            check_value(meta, depth=PRESENCE_META_DEPTH, what="meta")  # before it is stored
            size = len(codec.encode(meta))
            if size > opts.max_presence_meta_bytes:
                raise PresenceMetaTooLarge(
                    f"presence meta is {size} bytes; the limit is "
                    f"{opts.max_presence_meta_bytes}")

    # ------------------------------------------------------------------ server changes

    def set_presence(self, session: Session, name: str, *, state: str | None = None,
                     meta: dict[str, Any] | None = None) -> list[str]:
        """Server side: change the state and/or metadata of ``session``'s member in ``name``.

        No hook runs (the server decides; :meth:`update_presence` is the hooked
        path). Raises :class:`NotSubscribed`, :class:`BadPresenceState` or
        :class:`PresenceMetaTooLarge`. Sends one ``presence_diff`` (with
        ``changed``) and emits ``presence.update`` when something changed; returns
        what changed (``state``, ``meta``). An explicit state ends an idle spell.
        """
        channel = self.channels.get(name)
        if channel is None or session.id not in channel.subscribers:
            raise NotSubscribed(f"not subscribed to {name!r}")
        if not channel.presence or session.id in channel.hidden:
            return []
        if state is not None:
            channel.idle.pop(session.user, None)  # an explicit state ends an idle spell
        return self.set_member(name, session.user, state=state, meta=meta,
                               session=session.id)

    def set_member(self, name: str, user: str, *, state: str | None = None,
                   meta: dict[str, Any] | None = None, session: str | None = None) -> list[str]:
        """Server side: change member ``user``'s state and/or metadata; no hook runs.

        ``meta`` replaces the member's metadata (``{}`` clears it); the state and
        size checks apply as for clients. Returns what changed (``[]`` when the
        user is not a member of ``name``). ``session``: the session id to put in
        the ``presence.update`` event.
        """
        channel = self.channels.get(name)
        if channel is None or user not in channel.members:
            return []
        opts = self.options
        self._check_change(state, meta)
        changed: list[str] = []
        new_meta = meta is not None and channel.metas.get(user, {}) != meta
        size = meta_size(meta) if new_meta and meta else 0
        if new_meta:  # refused before anything changes
            self.check_meta_room(channel, user, size)
        if state is not None and channel.state_of(user, opts.presence_states[0]) != state:
            channel.set_state(user, state, opts.presence_states[0])
            changed.append("state")
        if new_meta:
            channel.put_meta(user, dict(meta or {}), size)
            changed.append("meta")
        if not changed:
            return changed
        if self.cluster is not None:  # every node's diff comes back from the broker
            self.cluster.updated(channel, user, changed)
        else:
            self.announce_change(channel, user, changed)
        if self.bus.active:
            self.bus.emit(ev.PresenceUpdate(
                at=self.clock(), session=session, user=user, channel=name,
                meta=dict(channel.metas.get(user) or {}),
                state=channel.state_of(user, opts.presence_states[0]), changed=tuple(changed)))
        return changed

    def check_meta_room(self, channel: Channel, user: str, size: int) -> None:
        """Raise :class:`PresenceMetaFull` when ``user``'s metadata of ``size`` bytes
        would take the channel's total past ``max_presence_channel_meta_bytes``
        (metadata that does not grow is always accepted)."""
        old = channel.meta_sizes.get(user, 0)
        total = channel.meta_bytes - old + size
        limit = self.options.max_presence_channel_meta_bytes
        if size > old and total > limit:
            raise PresenceMetaFull(
                f"the presence metadata of {channel.name!r} would be {total} bytes, all "
                f"members together; the limit is {limit} (max_presence_channel_meta_bytes)")

    def announce_change(self, channel: Channel, user: str, changed: list[str],
                        exclude: Session | None = None) -> None:
        """Send the member's new info to the channel as a ``presence_diff`` with ``changed``."""
        diff = messages.presence_diff_message(channel.name,
                                              {user: self.member_info(channel, user)}, {})
        diff["changed"] = {user: changed}
        self.announce(channel.name, diff, exclude)

    def announce(self, name: str, diff: dict[str, object],
                 exclude: Session | None = None) -> None:
        """The one way a ``presence_diff`` reaches channel ``name``'s local subscribers
        (joins, leaves and updates of this server, and the broker's remote ones).

        Merged with the channel's other diffs of the window (``presence_batch_window``,
        core/presence_batch.py), or sent at once to all but ``exclude`` (a window of 0,
        or a hub no scheduler drives). A channel not in full mode gets no diff: its
        count is sent when due (core/presence_modes.py).
        """
        channel = self.channels.get(name)
        if channel is not None and self.modes is not None and self.modes.divert(channel):
            return
        self.batch.add(name, diff, exclude)

    def _send_diff(self, name: str, diff: dict[str, object], exclude: Session | None,
                   text: str | None, only: Collection[str] | None,
                   skip: Collection[str]) -> None:
        """Frame a (merged) diff once and queue it for the channel's subscribers: all
        but ``exclude`` and ``skip``, or those of ``only`` (session ids)."""
        channel = self.channels.get(name)
        if channel is not None and channel.subscribers and channel.presence_mode == "full":
            frame = text_frame(text if text is not None else codec.encode(diff))
            if exclude is not None:
                skip = {exclude.id, *skip}
            waiting = self._unlisted.get(name)
            if waiting:
                skip = waiting | set(skip)
            subscribers = channel.subscribers
            targets = (list(subscribers.values()) if only is None
                       else [subscribers[i] for i in only if i in subscribers])
            if targets:
                self.outbox.fan_out(targets, frame, Priority.HIGH, diff, skip=skip)

    def member_info(self, channel: Channel, user: str) -> dict[str, object]:
        """A local member's info (``connections``, ``state``, ``meta``) as the wire has it."""
        return channel.member_info(user, self.options.presence_states[0])

    # ------------------------------------------------------------------ leaving

    def announce_leave(self, channel: Channel, user: str, reason: str,
                       session: str | None = None) -> None:
        """Drop member ``user`` now: leave diff (with its reason) and event."""
        channel.drop_member(user)
        info: dict[str, object] = {"connections": 0}
        if reason != LEFT and self.options.presence_details:
            info["reason"] = reason
        if channel.subscribers:
            self.announce(channel.name,
                          messages.presence_diff_message(channel.name, {}, {user: info}))
        if self.bus.active:
            kind = ev.PresenceTimeout if reason == TIMEOUT else ev.PresenceLeave
            self.bus.emit(kind(at=self.clock(), session=session, user=user,
                               channel=channel.name, reason=reason))

    def kick(self, name: str, user: str, reason: str = "kicked") -> int:
        """Unsubscribe every connection of ``user`` from ``name``, on every node; leave
        reason ``kicked``.

        Each kicked connection gets ``unsubscribed`` with ``"reason": "kicked"``.
        Returns how many connections of this server were unsubscribed.
        """
        kicked = self.kick_here(name, user, reason)
        if self.cluster is not None:
            self.cluster.kick(name, user, reason)
        return kicked

    def kick_here(self, name: str, user: str, reason: str = "kicked") -> int:
        """:meth:`kick` on this server only (the broker's node calls it for a kick made
        on another node)."""
        channel = self.channels.get(name)
        if channel is None:
            return 0
        victims = [s for s in channel.subscribers.values() if s.user == user]
        for session in victims:
            self._leave(session, name, KICKED)
            msg = messages.unsubscribed_message(name, None)
            msg["reason"] = reason
            self.outbox.send(session, msg)
        if user in channel.grace:  # a member waiting out its grace period
            channel.grace.pop(user)
            self.announce_leave(channel, user, KICKED)
            self.registry.drop_if_empty(channel)
        return len(victims)

    # ------------------------------------------------------------------ grace

    def hold(self, channel: Channel, session: Session, reason: str) -> None:
        """Start the grace period of ``session``'s member (its last connection closed)."""
        channel.grace[session.user] = (self.clock() + self.options.presence_grace, reason)
        self._arm_grace_timer(self.options.presence_grace)

    def _arm_grace_timer(self, delay: float) -> None:
        if self._grace_timer is not None:
            return
        try:
            self._grace_timer = self.scheduler.call_later(delay + 0.001, self._grace_due)
        except RuntimeError:  # no loop (unit tests): call expire_presence() yourself
            return

    def _grace_due(self) -> None:
        self._grace_timer = None
        nxt = self.expire_presence()
        if nxt is not None:
            self._arm_grace_timer(max(0.0, nxt - self.clock()))

    def expire_presence(self, now: float | None = None) -> float | None:
        """End the grace periods that are due (announce their leaves).

        Returns the next deadline, or None. Called by a timer on the running loop;
        tests with a fake clock call it directly.
        """
        now = self.clock() if now is None else now
        nxt: float | None = None
        for channel in list(self.channels.values()):
            for user, (deadline, reason) in list(channel.grace.items()):
                if deadline <= now:
                    del channel.grace[user]
                    self.announce_leave(channel, user, reason)
                elif nxt is None or deadline < nxt:
                    nxt = deadline
            self.registry.drop_if_empty(channel)
        return nxt

    # ------------------------------------------------------------------ idle

    def check_presence_idle(self, now: float | None = None) -> int:
        """Move members idle for ``presence_idle_timeout`` to ``presence_idle_state``.

        Called every heartbeat tick. Returns how many members changed. A member
        moved this way returns to its earlier state on its next inbound message.
        """
        limit = self.options.presence_idle_timeout
        if limit is None:
            return 0
        now = self.clock() if now is None else now
        target = self.options.presence_idle_state
        default = self.options.presence_states[0]
        moved = 0
        for channel in list(self.channels.values()):
            if not channel.presence:
                continue
            last: dict[str, float] = {}
            for s in channel.subscribers.values():
                if s.id not in channel.hidden:
                    last[s.user] = max(last.get(s.user, 0.0), s.last_activity)
            for user, seen in last.items():
                state = channel.state_of(user, default)
                if now - seen < limit or state == target or user in channel.idle:
                    continue
                channel.idle[user] = state
                self.idle_users.setdefault(user, set()).add(channel.name)
                self.set_member(channel.name, user, state=target)
                moved += 1
        return moved

    def wake(self, session: Session) -> None:
        """An idled member sent something: give back its earlier state."""
        names = self.idle_users.pop(session.user, ())
        for name in names:
            channel = self.channels.get(name)
            if channel is None:
                continue
            state = channel.idle.pop(session.user, None)
            if state is not None and session.user in channel.members:
                self.set_member(name, session.user, state=state, session=session.id)


def meta_size(meta: dict[str, Any]) -> int:
    """The encoded size of presence metadata, in bytes (what it adds to the member list)."""
    text = codec.encode(meta)
    return len(text) if text.isascii() else len(text.encode())


async def _applied(result: Awaitable[object]) -> bool:
    try:
        await result
    except ProtocolError:
        return False
    return True

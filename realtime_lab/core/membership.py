"""Channels: subscribe (the ``subscribed`` reply, built once), leave, presence diffs.

:class:`MembershipService` (``hub.services.membership``) subscribes and unsubscribes
sessions: the ``on_subscribe`` hook, the channel authorization, the ``on_presence``
hook, the join with its presence diff, the ``subscribed`` reply (with the channel's
metadata, info and history position) and the member list; with a broker it holds
the session's messages until the node has the channel, then sends what it missed.
A leave drops the session's membership with its reason (presence grace, diffs).

What it needs from the rest of the hub comes in through the constructor: the
channel registry, the presence service, history, the member-list pager and where
requests' answers go. Publishing is core/publish.py's (``hub.services.publisher``).
"""


from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from realtime_lab.core import events as ev
from realtime_lab.core.authz import authorize
from realtime_lab.core.backplane import HistoryRead
from realtime_lab.core.channels import CLOSED, KICKED, LEFT, TIMEOUT, Channel
from realtime_lab.core.hooks import HookResult, Hooks, MaybeAwaitable, refused
from realtime_lab.core.presence import meta_size as presence_meta_size
from realtime_lab.core.presence_sync import ChannelMembers
from realtime_lab.core.requests import Answers, Request
from realtime_lab.core.session import Session
from realtime_lab.errors import (
    ProtocolError,
    SubscribeRefused,
    TooManySubscriptions,
)
from realtime_lab.protocol import messages
from realtime_lab.protocol.values import PRESENCE_META_DEPTH, check_value

if TYPE_CHECKING:
    from realtime_lab.core.backplane import Cluster
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.history import HistoryService
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.ports import Clock
    from realtime_lab.core.presence import PresenceService
    from realtime_lab.core.presence_modes import PresenceModes
    from realtime_lab.core.presence_sync import PresencePager
    from realtime_lab.core.registry import ChannelRegistry

log = logging.getLogger("realtime_lab.core")


class MembershipService:
    """Subscribe and leave, with presence and recovery (``hub.services.membership``);
    the commands' :class:`~realtime_lab.core.commands.MembershipPort`."""

    def __init__(self, options: ServerOptions, *, clock: Clock, bus: EventBus, hooks: Hooks,
                 registry: ChannelRegistry, presence: PresenceService, modes: PresenceModes,
                 history: HistoryService, pager: PresencePager, answers: Answers) -> None:
        self.options = options
        self.clock = clock
        self.bus = bus
        self.hooks = hooks
        self.registry = registry
        self.channels = registry.channels
        self.presence_service = presence
        self.history = history
        #: New subscribers' member lists, sent in pages (core/presence_sync.py).
        self.pager = pager
        #: Each channel's presence mode and member limit (core/presence_modes.py).
        self.modes = modes
        self.answers = answers
        #: Users with idled presence members (the presence service's dict).
        self.idle_users = presence.idle_users
        #: The other nodes (the hub's backplane when it has a broker; ``Hub.use_backplane``).
        self.cluster: Cluster | None = None

    # ------------------------------------------------------------------ MembershipPort

    def presence(self, request: Request, msg: messages.SetPresence) -> MaybeAwaitable[None]:
        """A client's ``presence`` message (``PresenceService.presence_message``)."""
        return self.presence_service.presence_message(request, msg)

    def wake(self, session: Session) -> None:
        """An idled presence member of ``session``'s user is active again."""
        self.presence_service.wake(session)

    def subscribe(self, session: Session, name: str, request_id: messages.RequestId = None,
                  auth: str | None = None) -> MaybeAwaitable[None]:
        """Subscribe ``session`` to channel ``name`` (idempotent).

        Runs the ``on_subscribe`` hook, the channel authorization (``auth``: a
        channel token, docs/channels.md) and the ``on_presence`` hook; returns an
        awaitable when one of them is async. The ``subscribed`` reply carries
        ``request_id``; a refusal raises its :class:`~realtime_lab.errors.ProtocolError`.
        """
        return self.join(Request(session, request_id, "subscribe", self.answers), name, auth)

    def join(self, request: Request, name: str, auth: str | None) -> MaybeAwaitable[None]:
        """Subscribe the request's session to ``name`` (:meth:`subscribe`); the reply goes
        through ``request``."""
        self.registry.validate(name)
        session = request.session
        if not request.is_open:
            return None
        if name in session.subscriptions:
            request.reply(messages.subscribed_message(name, request.id))
            return None
        self._check_subscription_limit(session)
        if self.hooks.on_subscribe is None:
            return self._authorized(request, name, None, auth)
        result = self.hooks.run("on_subscribe", session, name)
        return request.then(result, lambda r: self._join_checked(request, name, r, auth))

    def _check_subscription_limit(self, session: Session) -> None:
        if len(session.subscriptions) >= self.options.max_subscriptions:
            raise TooManySubscriptions(
                f"already subscribed to {len(session.subscriptions)} channels; "
                f"the limit is {self.options.max_subscriptions}")

    def _join_checked(self, request: Request, name: str, verdict: HookResult,
                      auth: str | None = None) -> MaybeAwaitable[None]:
        refusal = refused(verdict)
        if refusal is not None:
            raise refusal.error(SubscribeRefused)
        if name in request.session.subscriptions:
            request.reply(messages.subscribed_message(name, request.id))
            return None
        self._check_subscription_limit(request.session)
        return self._authorized(request, name, verdict if isinstance(verdict, dict) else None,
                                auth)

    def _authorized(self, request: Request, name: str, meta: dict[str, object] | None,
                    auth: str | None) -> MaybeAwaitable[None]:
        """Check the channel's rule (core/authz.py), then join with the granted member data."""
        rule = self.registry.rule(name)
        if rule.policy == "public":
            return self._join(request, name, meta)
        opts, own = self.options, request.session.authorizer
        grant = authorize(rule, request.session, name, auth,
                          secret=None if own else opts.channel_secret or opts.token_secret,
                          authorizer=own or opts.authorizer, timeout=self.hooks.timeout)
        return request.then(grant, lambda g: self._join(request, name, meta, g.member))

    def _join(self, request: Request, name: str, meta: dict[str, object] | None,
              member: dict[str, object] | None = None) -> MaybeAwaitable[None]:
        if self.hooks.on_presence is None or not self.registry.has_presence(name):
            self._join_now(request, name, meta, member)
            return None
        verdict = self._ask_presence(request.session, name, {
            "event": "join", "state": self.options.presence_states[0], "meta": member or {}})
        return request.then(verdict, lambda v: self._join_now(
            request, name, meta, member if v is True or v is None else v))

    def _ask_presence(self, session: Session, name: str,
                      change: dict[str, object]) -> MaybeAwaitable[HookResult]:
        """The on_presence verdict; a failing hook vetoes (False), never raises."""
        try:
            result = self.hooks.run("on_presence", session, name, change)
        except ProtocolError:
            return False
        if inspect.isawaitable(result):
            return _veto_on_error(result)
        return result

    def _join_now(self, request: Request, name: str, meta: dict[str, object] | None,
                  verdict: HookResult) -> None:
        session = request.session
        if name in session.subscriptions:
            return
        # values from on_subscribe / on_presence / the authorizer are stored: check them first
        if meta:
            check_value(meta, what="metadata")
        if isinstance(verdict, dict):
            check_value(verdict, depth=PRESENCE_META_DEPTH, what="meta")
        channel = self.channels.get(name)
        presence = self.presence_service
        visible = refused(verdict) is None
        if visible:  # max_presence_members, a full channel's limit (core/presence_modes.py)
            self.modes.admit(channel, session.user)
        occupied = channel is None or not channel.subscribers
        known = visible and channel is not None and session.user in channel.members
        took_over = visible and channel is not None and session.user in channel.grace
        meta_size = 0  # a new member's metadata (a channel token's or a hook's) must fit
        if visible and isinstance(verdict, dict) and verdict and not known and not took_over:
            meta_size = presence_meta_size(verdict)
        channel, joined = self.registry.join(
            session, name, visible=visible, admit=None if not meta_size else (
                lambda ch: presence.check_meta_room(ch, session.user, meta_size)))
        if meta:
            channel.metadata.update(meta)
        if joined and isinstance(verdict, dict):
            channel.put_meta(session.user, verdict, meta_size)
        if self.bus.active:
            self._emit_join(session, channel, occupied, joined)
        cluster = self.cluster
        if cluster is not None:  # the hub answers once the node gets the channel
            self.history.hold(session, name)
            if channel.presence:
                presence.unlisted(name, session)
            cluster.subscribed(session, channel, lambda read: self._answer(request, name, read))
            return
        self._answer(request, name, None)
        if channel.presence:
            if joined:
                diff = messages.presence_diff_message(
                    name, {session.user: presence.member_info(channel, session.user)}, {})
                presence.announce(name, diff, exclude=session)
            elif known and not took_over and self.options.presence_details:  # another tab
                presence.announce_change(channel, session.user, ["connections"],
                                         exclude=session)

    def _answer(self, request: Request, name: str, read: HistoryRead | None) -> None:
        """The ``subscribed`` reply (built here only), the member list, and with a broker
        the missed and held messages; ``read``: the broker's history position."""
        session = request.session
        channel = self.channels.get(name)
        cluster = self.cluster
        history = self.history
        self.presence_service.listed(name, session)  # diffs from now on follow its list
        if channel is None or name not in session.subscriptions or not request.is_open:
            history.finish(session, name, read)  # forgets what it held
            return
        reply = messages.subscribed_message(name, request.id)
        if channel.metadata:
            reply["meta"] = channel.metadata
        if self.options.subscribe_channel_info:
            info = self.registry.info(name)
            counts = cluster.counts(name) if cluster is not None else None
            if info is not None and counts is not None:  # cluster-wide, as GET /api/channels
                info["subscribers"], info["members"] = counts
            reply["info"] = info
        if read is not None:
            reply["offset"], reply["epoch"] = read.offset, read.epoch
        elif cluster is None and self.options.history:
            history.position(name, reply)
        request.reply(reply)
        mode = self.modes.mode(channel)  # past its limit: counts from now on
        if mode == "counts":
            self.modes.send_count(session, channel)
        elif mode == "full":
            source = cluster.member_source(name) if cluster is not None else ChannelMembers(
                channel, self.options.presence_states[0])
            if source is not None:
                self.pager.start(session, name, source)
        if cluster is not None:
            history.finish(session, name, read)

    def _emit_join(self, session: Session, channel: Channel, occupied: bool,
                   joined: bool) -> None:
        now, bus = self.clock(), self.bus
        sid, user, name = session.id, session.user, channel.name
        if occupied:
            bus.emit(ev.ChannelOccupied(at=now, session=sid, user=user, channel=name))
        bus.emit(ev.ChannelSubscribed(at=now, session=sid, user=user, channel=name))
        if joined and channel.presence:
            bus.emit(ev.PresenceJoin(at=now, session=sid, user=user, channel=name,
                                     meta=dict(channel.metas.get(user) or {})))

    def leave(self, session: Session, name: str, *, reason: str | None = None) -> None:
        """Unsubscribe ``session``; ``reason``: left (None), closed, timeout or kicked."""
        left = self.registry.leave(session, name)
        if self.pager.active:
            self.pager.cancel(session, name)
        self.presence_service.listed(name, session)
        if left is None:
            return
        channel, remaining = left
        reason = reason or LEFT
        user, bus, cluster = session.user, self.bus, self.cluster
        if bus.active:
            bus.emit(ev.ChannelUnsubscribed(at=self.clock(), session=session.id, user=user,
                                            channel=name))
        if cluster is not None:  # cluster-wide diffs come from the broker
            if remaining == 0:
                channel.drop_member(user)
                if bus.active and channel.presence:
                    kind = ev.PresenceTimeout if reason == TIMEOUT else ev.PresenceLeave
                    bus.emit(kind(at=self.clock(), session=session.id, user=user,
                                  channel=name, reason=reason))
            cluster.left(session, channel, reason)
        elif remaining == 0 and channel.presence and reason in (CLOSED, TIMEOUT) \
                and self.options.presence_grace > 0:
            self.presence_service.hold(channel, session, reason)
        elif remaining == 0 and channel.presence:
            self.presence_service.announce_leave(channel, user, reason, session.id)
        elif remaining == 0:
            channel.drop_member(user)
        elif remaining > 0 and channel.presence and self.options.presence_details \
                and reason != KICKED:  # a kick takes every tab: only its leave is news
            self.presence_service.announce_change(channel, user, ["connections"])
        if bus.active and not channel.subscribers:
            bus.emit(ev.ChannelVacated(at=self.clock(), session=session.id, user=user,
                                       channel=name))
        self.registry.drop_if_empty(channel)


async def _veto_on_error(result: Awaitable[HookResult]) -> HookResult:
    try:
        return await result
    except ProtocolError:
        return False


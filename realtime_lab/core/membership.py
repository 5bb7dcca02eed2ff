"""Channels: subscribe (the ``subscribed`` reply, built once), leave, presence diffs.

Publishing is core/publish.py's (``hub.services.publisher``).

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.
"""


from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from realtime_lab.core import events as ev
from realtime_lab.core.authz import authorize
from realtime_lab.core.backplane import HistoryRead
from realtime_lab.core.channels import CLOSED, KICKED, LEFT, TIMEOUT, Channel
from realtime_lab.core.hooks import HookResult, MaybeAwaitable, refused
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.presence import meta_size as presence_meta_size
from realtime_lab.core.presence_sync import ChannelMembers
from realtime_lab.core.requests import Request
from realtime_lab.core.session import Session
from realtime_lab.errors import (
    PresenceFull,
    ProtocolError,
    SubscribeRefused,
    TooManySubscriptions,
)
from realtime_lab.protocol import messages
from realtime_lab.protocol.values import PRESENCE_META_DEPTH, check_value

log = logging.getLogger("realtime_lab.core")


class Membership(HubBase):
    """Subscriptions, presence and encode-once broadcast (part of Hub)."""

    def subscribe(self, session: Session, name: str, request_id: messages.RequestId = None,
                  auth: str | None = None) -> MaybeAwaitable[None]:
        """Subscribe ``session`` to channel ``name`` (idempotent).

        Runs the ``on_subscribe`` hook, the channel authorization (``auth``: a
        channel token, docs/channels.md) and the ``on_presence`` hook; returns an
        awaitable when one of them is async. The ``subscribed`` reply carries
        ``request_id``; a refusal raises its :class:`~realtime_lab.errors.ProtocolError`.
        """
        return self._subscribe(Request(session, request_id, "subscribe", self), name, auth)

    def _subscribe(self, request: Request, name: str,
                   auth: str | None) -> MaybeAwaitable[None]:
        self.services.registry.validate(name)
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

    def _authorized(self, request: Request, name: str, meta: dict[str, Any] | None,
                    auth: str | None) -> MaybeAwaitable[None]:
        """Check the channel's rule (core/authz.py), then join with the granted member data."""
        rule = self.services.registry.rule(name)
        if rule.policy == "public":
            return self._join(request, name, meta)
        opts, own = self.options, request.session.authorizer
        grant = authorize(rule, request.session, name, auth,
                          secret=None if own else opts.channel_secret or opts.token_secret,
                          authorizer=own or opts.authorizer, timeout=self.hooks.timeout)
        return request.then(grant, lambda g: self._join(request, name, meta, g.member))

    def _join(self, request: Request, name: str, meta: dict[str, Any] | None,
              member: dict[str, Any] | None = None) -> MaybeAwaitable[None]:
        if self.hooks.on_presence is None or not self.services.registry.has_presence(name):
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

    def _join_now(self, request: Request, name: str, meta: dict[str, Any] | None,
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
        presence = self.services.presence
        visible = refused(verdict) is None
        if (channel is not None and channel.presence and visible
                and session.user not in channel.members
                and len(channel.members) >= self.options.max_presence_members):
            raise PresenceFull(f"{name!r} has {len(channel.members)} members; the limit is "
                               f"{self.options.max_presence_members}")
        occupied = channel is None or not channel.subscribers
        known = visible and channel is not None and session.user in channel.members
        took_over = visible and channel is not None and session.user in channel.grace
        meta_size = 0  # a new member's metadata (a channel token's or a hook's) must fit
        if visible and isinstance(verdict, dict) and verdict and not known and not took_over:
            meta_size = presence_meta_size(verdict)
        channel, joined = self.services.registry.join(
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
            self.services.history.hold(session, name)
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
        history = self.services.history
        self.services.presence.listed(name, session)  # diffs from now on follow its list
        if channel is None or name not in session.subscriptions or not request.is_open:
            history.finish(session, name, read)  # forgets what it held
            return
        reply = messages.subscribed_message(name, request.id)
        if channel.metadata:
            reply["meta"] = channel.metadata
        if self.options.subscribe_channel_info:
            info = self.services.registry.info(name)
            counts = cluster.counts(name) if cluster is not None else None
            if info is not None and counts is not None:  # cluster-wide, as GET /api/channels
                info["subscribers"], info["members"] = counts
            reply["info"] = info
        if read is not None:
            reply["offset"], reply["epoch"] = read.offset, read.epoch
        elif cluster is None and self.options.history:
            history.position(name, reply)
        request.reply(reply)
        if channel.presence:
            source = cluster.member_source(name) if cluster is not None else ChannelMembers(
                channel, self.options.presence_states[0])
            if source is not None:
                self.presence_pager.start(session, name, source)
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

    def _leave(self, session: Session, name: str, *, timed_out: bool = False,
               reason: str | None = None) -> None:
        """Unsubscribe ``session``; ``reason``: left, closed, timeout or kicked."""
        left = self.services.registry.leave(session, name)
        if self.presence_pager.active:
            self.presence_pager.cancel(session, name)
        self.services.presence.listed(name, session)
        if left is None:
            return
        channel, remaining = left
        reason = reason or (TIMEOUT if timed_out else LEFT)
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
            self.services.presence.hold(channel, session, reason)
        elif remaining == 0 and channel.presence:
            self.services.presence.announce_leave(channel, user, reason, session.id)
        elif remaining == 0:
            channel.drop_member(user)
        elif remaining > 0 and channel.presence and self.options.presence_details \
                and reason != KICKED:  # a kick takes every tab: only its leave is news
            self.services.presence.announce_change(channel, user, ["connections"])
        if bus.active and not channel.subscribers:
            bus.emit(ev.ChannelVacated(at=self.clock(), session=session.id, user=user,
                                       channel=name))
        self.services.registry.drop_if_empty(channel)

    def _fan_out(self, channel: Channel, frame: bytes, exclude: Session | None = None,
                 priority: Priority = Priority.NORMAL, *,
                 message: dict[str, Any] | None = None) -> int:
        """Queue the same frame for every subscriber; return how many got it.

        ``frame`` is the JSON text frame. Subscribers with another wire format
        (msgpack, compressed) get the frame of theirs, built once per broadcast.
        A very large group is served over several loop turns (core/outbox.py).
        """
        skip = (exclude.id,) if exclude is not None else ()
        return self.services.outbox.fan_out(list(channel.subscribers.values()), frame, priority,
                                            message, skip=skip)


async def _veto_on_error(result: Awaitable[HookResult]) -> HookResult:
    try:
        return await result
    except ProtocolError:
        return False


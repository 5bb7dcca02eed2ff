"""The channel registry: which channels exist, their metadata, rules and name checks.

A service of :class:`realtime_lab.core.hub.Hub` (``hub.services.registry``) with its
own state; it never imports the hub or presence. It holds:

* ``channels``, the channels that have subscribers (or members in their grace
  period): the same dict ``hub.channels`` exposes. A channel is made by the first
  :meth:`ChannelRegistry.join` and dropped by :meth:`ChannelRegistry.drop_if_empty`
  once nobody is left;
* custom channel metadata (docs/channels.md#channel-metadata): metadata set with
  :meth:`ChannelRegistry.set_metadata` is kept while the channel has no
  subscribers, and given back to it when it is made again;
* the channel rules (core/authz.py), the ``publish_channels`` and
  ``presence_channels`` patterns, and the name check (``bad_channel``).

Member counts in :meth:`ChannelRegistry.info` and :meth:`ChannelRegistry.describe_all`
come from the ``count_members`` callable the hub passes in (the presence side), so the
registry does not need to know how presence is kept.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Mapping
from typing import cast

from realtime_lab.core.authz import ChannelRule, rule_for
from realtime_lab.core.channels import Channel, validate_channel
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.presence_modes import PresencePolicy
from realtime_lab.core.session import Session
from realtime_lab.errors import Forbidden, ProtocolError
from realtime_lab.protocol.messages import RequestId
from realtime_lab.protocol.values import check_value

#: A channel's presence member count (the hub passes presence's; the default reads
#: the channel's own member table).
MemberCount = Callable[[Channel], int]
#: A check of a channel before a session joins it (it raises to refuse the join).
Admit = Callable[[Channel], None]


def _own_members(channel: Channel) -> int:
    return len(channel.members)


class ChannelRegistry:
    """Channels by name, their custom metadata, rules, and the checks on channel names."""

    def __init__(self, options: ServerOptions, *,
                 count_members: MemberCount = _own_members) -> None:
        self.options = options
        self.count_members = count_members
        #: Live channels by name (``hub.channels``).
        self.channels: dict[str, Channel] = {}
        #: The channel rules in force (``ServerOptions.channel_rules``, core/authz.py).
        self.rules = cast("tuple[ChannelRule, ...]", options.active_channel_rules())
        self._kept_meta: dict[str, dict[str, object]] = {}  # set_metadata, outlives channels
        pub = options.publish_channels
        patterns = [pub] if isinstance(pub, str) else list(pub)
        self._publish_re: re.Pattern[str] | None = None if "*" in patterns else re.compile(
            "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")

    # ------------------------------------------------------------------ names and rules

    def get(self, name: str) -> Channel | None:
        """The live channel ``name``, or None."""
        return self.channels.get(name)

    def validate(self, name: str, request_id: RequestId = None) -> None:
        """Raise :class:`~realtime_lab.errors.BadChannel` (with ``request_id``) unless
        ``name`` is an allowed channel name."""
        try:
            validate_channel(name, self.options)
        except ProtocolError as err:  # built whole: a copy with the id, when it has one
            raise err.for_request(request_id) from None

    def rule(self, name: str) -> ChannelRule:
        """The rule of channel ``name`` (the first that matches, else public)."""
        return rule_for(name, self.rules)

    def has_presence(self, name: str) -> bool:
        """Whether channel ``name`` tracks presence (its rule's ``presence``, else
        ``presence_channels`` and ``presence_mode``)."""
        return self.presence_policy(name).mode != "off"

    def presence_policy(self, name: str) -> PresencePolicy:
        """Channel ``name``'s presence mode and member limit: its rule's, else the
        server's options (docs/presence.md, "Presence modes")."""
        opts = self.options
        rule = self.rule(name) if self.rules else None
        mode: str | None = rule.presence if rule is not None else None
        if mode is None:
            pattern = opts.presence_channels
            matched = pattern is not None and fnmatch.fnmatchcase(name, pattern)
            mode = opts.presence_mode if matched else "off"
        limit = rule.presence_limit if rule is not None else None
        over = rule.over_limit if rule is not None else None
        return PresencePolicy(mode, limit if limit is not None else opts.presence_full_limit,
                              over if over is not None else opts.presence_over_limit)

    def check_publish(self, session: Session, name: str, request_id: RequestId = None) -> None:
        """May ``session`` (a client) publish to ``name``? Raise ``bad_channel`` or
        :class:`~realtime_lab.errors.Forbidden` (``publish_channels``, the channel's
        rule) with ``request_id`` when not."""
        self.validate(name, request_id)
        if self._publish_re is not None and self._publish_re.match(name) is None:
            raise Forbidden(f"clients may not publish to {name!r}", request_id=request_id)
        if not self.rules:
            return
        who = self.rule(name).publish
        if who == "none":
            raise Forbidden(f"clients may not publish to {name!r}", request_id=request_id)
        if who == "subscribers" and name not in session.subscriptions:
            raise Forbidden(f"only subscribers may publish to {name!r}", request_id=request_id)

    # ------------------------------------------------------------------ joining and leaving

    def join(self, session: Session, name: str, *, visible: bool = True,
             admit: Admit | None = None) -> tuple[Channel, bool]:
        """Add ``session`` to channel ``name``, made when missing (with its kept metadata).

        ``visible=False`` subscribes without presence (an ``on_presence`` veto).
        ``admit`` checks the channel before the session is added; when it raises,
        a channel made for this join is dropped again. Returns the channel and
        whether the session's user is a new presence member of it.
        """
        channel = self.channels.get(name)
        if channel is None:
            policy = self.presence_policy(name)
            channel = self.channels[name] = Channel(name, time.time(), policy.mode != "off",
                                                    presence_mode=policy.mode)
            kept = self._kept_meta.get(name)
            if kept is not None:  # set_metadata: outlives the channel
                channel.metadata = kept
        if admit is not None:
            try:
                admit(channel)
            except BaseException:
                self.drop_if_empty(channel)
                raise
        joined = channel.add(session, visible=visible)
        # the channel's own name string, not this request's copy: one string per channel,
        # not one per subscription (about 54 bytes each; issue 16 point 3)
        session.subscriptions.add(channel.name)
        return channel, joined

    def leave(self, session: Session, name: str) -> tuple[Channel, int] | None:
        """Take ``session`` out of channel ``name``: the channel and its user's remaining
        connections there (0: the last one, -1: not a presence member), or None when
        the channel does not exist. The channel stays until :meth:`drop_if_empty`."""
        session.subscriptions.discard(name)
        channel = self.channels.get(name)
        if channel is None:
            return None
        return channel, channel.release(session)

    def drop_if_empty(self, channel: Channel) -> None:
        """Forget ``channel`` when it has no subscriber and no member in its grace period."""
        if not channel.subscribers and not channel.grace \
                and self.channels.get(channel.name) is channel:
            del self.channels[channel.name]

    # ------------------------------------------------------------------ info and metadata

    def info(self, name: str) -> dict[str, object] | None:
        """Counts and custom metadata of channel ``name``; None when it has no subscribers
        and no metadata was set for it."""
        channel = self.channels.get(name)
        if channel is not None:
            return channel.info(self.count_members(channel))
        kept = self._kept_meta.get(name)
        if kept is None:
            return None
        return {"name": name, "subscribers": 0, "members": 0, "messages": 0,
                "presence": False, "created_at": None, "metadata": dict(kept)}

    def describe_all(self) -> list[dict[str, object]]:
        """Every live channel's counts, sorted by name (``GET /api/channels``)."""
        return [c.describe(self.count_members(c))
                for c in sorted(self.channels.values(), key=lambda c: c.name)]

    def set_metadata(self, name: str, values: Mapping[str, object], *,
                     replace: bool = False) -> dict[str, object]:
        """Merge ``values`` into channel ``name``'s custom metadata (or replace it).

        Kept while the channel has no subscribers, until :meth:`clear_metadata`.
        A value of None removes that key. Returns the new metadata. Raises
        :class:`~realtime_lab.errors.BadValue` for a value outside the data model.
        """
        validate_channel(name, self.options)
        check_value(values, what="metadata")
        channel = self.channels.get(name)
        meta = self._kept_meta.get(name)
        if meta is None:
            meta = channel.metadata if channel is not None else {}
            self._kept_meta[name] = meta
        if channel is not None:
            channel.metadata = meta
        if replace:
            meta.clear()
        for key, value in values.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return dict(meta)

    def clear_metadata(self, name: str) -> None:
        """Forget the custom metadata of ``name`` (a live channel keeps an empty dict)."""
        self._kept_meta.pop(name, None)
        channel = self.channels.get(name)
        if channel is not None:
            channel.metadata = {}

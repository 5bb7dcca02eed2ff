"""The hub's wiring: builds the services and hands each the others it needs.

:func:`build_services` is called once, by ``Hub.__init__``; the hub is then a thin
facade over what it returns. The services never import this module (they are
below it); it imports them, and not the hub (``HubParts`` is what it reads of it).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from realtime_lab.core.backplane import LocalBackplane
from realtime_lab.core.commands import Commands
from realtime_lab.core.connections import Connections
from realtime_lab.core.heartbeat import HeartbeatPolicy
from realtime_lab.core.history import HistoryService
from realtime_lab.core.liveness import Liveness
from realtime_lab.core.membership import MembershipService
from realtime_lab.core.outbound import Priority
from realtime_lab.core.outbox import Outbox
from realtime_lab.core.pipeline import HubView
from realtime_lab.core.presence import PresenceService
from realtime_lab.core.presence_modes import PresenceModes
from realtime_lab.core.presence_sync import PresencePager
from realtime_lab.core.publish import PublishPath
from realtime_lab.core.registry import ChannelRegistry
from realtime_lab.core.requests import Answers
from realtime_lab.core.services import Services
from realtime_lab.protocol import codec
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.protocol.frames import text_frame

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.hooks import Hooks
    from realtime_lab.core.ports import Clock, Scheduler
    from realtime_lab.core.presence_batch import PresenceBatcher
    from realtime_lab.core.session import Session
    from realtime_lab.logthrottle import LogThrottle


class HubParts(HubView, Answers, Protocol):
    """What the wiring reads of the hub: its options, clock, hooks, bus, counters,
    sessions and log throttle (set before the services are built), the callbacks the
    services call back (``close``, ``send``, ``reject``, ``publish``), and, at call
    time, its scheduler and presence batcher and pager."""

    @property
    def clock(self) -> Clock: ...

    @property
    def hooks(self) -> Hooks: ...

    @property
    def log_throttle(self) -> LogThrottle: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def presence_batch(self) -> PresenceBatcher: ...

    @property
    def presence_pager(self) -> PresencePager: ...


@dataclass(frozen=True, slots=True)
class Assembly:
    """What :func:`build_services` built: the services, and the parts the hub also
    names (its ``presence_pager``, ``presence_modes`` and local backplane)."""

    services: Services
    presence_pager: PresencePager
    presence_modes: PresenceModes
    local: LocalBackplane


def build_services(hub: HubParts) -> Assembly:
    """Build the hub's services, each handed the others it calls (no service builds
    another; the order is that of their dependencies)."""
    opts, clock, bus, hooks, stats = hub.options, hub.clock, hub.bus, hub.hooks, hub.stats
    log_throttle = hub.log_throttle
    #: Per-connection queues, one write per turn, fan-outs, slow consumers.
    outbox = Outbox(opts, stats=stats, bus=bus, clock=clock, log_throttle=log_throttle,
                    schedule=hub.scheduler.call_soon, close=hub.close)
    registry = ChannelRegistry(opts)
    presence = PresenceService(opts, registry=registry, outbox=outbox, clock=clock,
                               bus=bus, hooks=hooks, scheduler=hub.scheduler,
                               answers=hub, leave=lambda s, name, why: membership.leave(
                                   s, name, reason=why))

    def send_members(s: Session, msg: dict[str, object], text: str, prio: Priority) -> bool:
        if msg["type"] == "presence_state" or msg.get("page") == 1:  # a list starts
            hub.presence_batch.synced(str(msg["channel"]), s)  # the window's diff skips it
        return outbox.send(s, msg, prio, text=text)

    #: New subscribers' member lists, sent in pages as they drain (core/presence_sync.py).
    pager = outbox.pager = PresencePager(opts, send_members, outbox.await_drain)

    def broadcast(channel: Channel, msg: dict[str, object]) -> None:
        outbox.fan_out(list(channel.subscribers.values()), text_frame(codec.encode(msg)),
                       Priority.HIGH, msg)

    def cancel_lists(channel: Channel) -> None:
        if hub.presence_pager.active:
            for session in channel.subscribers.values():
                hub.presence_pager.cancel(session, channel.name)

    #: Presence modes (full, counts, off), the member limit, throttled counts
    #: (core/presence_modes.py); counts read from the presence service.
    modes = presence.modes = PresenceModes(
        opts, policy=registry.presence_policy, count=lambda ch: presence.count(ch.name),
        send=lambda s, msg: outbox.send(s, msg, Priority.HIGH), broadcast=broadcast,
        cancel_lists=cancel_lists, clock=clock, live=registry.channels.get)
    history = HistoryService(opts, clock=clock, send=outbox.send, enqueue=outbox.enqueue)
    membership = MembershipService(opts, clock=clock, bus=bus, hooks=hooks,
                                   registry=registry, presence=presence, modes=modes,
                                   history=history, pager=pager, answers=hub)
    backplane = LocalBackplane(secrets.token_hex(6), history.number)
    publisher = PublishPath(opts, hub=hub, backplane=backplane, registry=registry,
                            outbox=outbox, history=history, stats=stats, bus=bus, clock=clock)
    backplane.attach(publisher)
    heartbeat = HeartbeatPolicy(opts)  # the welcome's intervals and the liveness ticks
    connections = Connections(opts, clock=clock, stats=stats, bus=bus, hooks=hooks,
                              log_throttle=log_throttle, sessions=hub.sessions, outbox=outbox,
                              heartbeat=heartbeat, leave=membership.leave)
    commands = Commands(opts, clock=clock, stats=stats, bus=bus, hooks=hooks,
                        log_throttle=log_throttle, outbox=outbox, registry=registry,
                        publisher=publisher, history=history, membership=membership,
                        close=connections.close, hub=hub)
    # the liveness schedule reads the hub's at call time (Hub.bind)
    liveness = Liveness(opts, clock=clock, schedule=lambda cb: hub.scheduler.call_soon(cb),
                        sessions=hub.sessions, stats=stats, bus=bus,
                        enqueue=outbox.enqueue, mark_dirty=outbox.mark_dirty,
                        close=connections.close, reject=commands.reject,
                        check_presence_idle=presence.check_presence_idle, policy=heartbeat)
    services = Services(connections=connections, membership=membership, commands=commands,
                        liveness=liveness, registry=registry, outbox=outbox, history=history,
                        publisher=publisher, presence=presence, backplane=backplane)
    return Assembly(services, pager, modes, backplane)


@runtime_checkable
class SetsCompression(Protocol):
    """A middleware that sets the permessage-deflate policy the transport negotiates
    (``realtime_lab.middleware.Compression``)."""

    @property
    def compression_policy(self) -> CompressionPolicy: ...


def compression_of(middleware: Sequence[object], default: CompressionPolicy) -> CompressionPolicy:
    """The first middleware's policy that sets one, else ``default`` (the options')."""
    for mw in middleware:
        if isinstance(mw, SetsCompression):
            return mw.compression_policy
    return default


__all__ = ["Assembly", "HubParts", "SetsCompression", "build_services", "compression_of"]

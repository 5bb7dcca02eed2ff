"""The publish path: one for one server and for many (issue 14, docs/architecture.md).

::

    Hub.publish / a client's publish / POST /api/channels/{name}/messages
      -> PublishPath.publish: the channel message, outbound middleware (once, on this
         node), the recorder's stamp, encoded once -> Backplane.publish(Publication)
      -> PublishPath.on_publication (every node, this one included): one frame,
         Outbox.fan_out to this node's subscribers (skipping the excluded sender and
         sessions still waiting for their history position), counts, recorder, events

With the default :class:`~realtime_lab.core.backplane.LocalBackplane` the second step
runs inside the first, before ``publish`` returns: two calls per publish, nothing per
subscriber. What other nodes receive is the message exactly as this node's
subscribers get it, whether this node has subscribers of the channel or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from realtime_lab.core import events as ev
from realtime_lab.core.backplane import Backplane, Publication
from realtime_lab.core.channels import Channel
from realtime_lab.core.events import EventBus
from realtime_lab.core.history import HistoryService
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.outbound import Priority
from realtime_lab.core.outbox import Outbox
from realtime_lab.core.pipeline import HubView, Outbound, compose
from realtime_lab.core.ports import Clock
from realtime_lab.core.registry import ChannelRegistry
from realtime_lab.core.session import Session
from realtime_lab.core.stats import HubStats
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.frames import text_frame


class BroadcastProbe(Protocol):
    """An observer of broadcasts (realtime_lab.instrument.Recorder; ``hub.recorder``)."""

    clock: Clock

    def begin(self, message: dict[str, Any]) -> float:
        """Before encoding: may add fields (``ts``); returns the start time."""

    def end(self, channel: Channel, frame_bytes: int, delivered: int, t0: float, t1: float,
            exclude: Session | None, *, fanout: int) -> None:
        """After fan-out: ``t1`` is when encoding ended; ``fanout`` the channel's local
        subscribers when it began (some may have left since: a slow consumer closed
        by this very fan-out leaves at once); ``exclude`` the sender left out (one of
        them), if any."""

    def latency_ms(self, channel: str, values_ms: Sequence[float]) -> None:
        """Delivery latencies a client reported for ``channel`` (``receipts`` messages)."""


class PublishPath:
    """publish -> backplane -> on_publication -> outbox (``hub.services.publisher``)."""

    def __init__(self, options: ServerOptions, *, hub: HubView, backplane: Backplane,
                 registry: ChannelRegistry, outbox: Outbox, history: HistoryService,
                 stats: HubStats, bus: EventBus, clock: Clock) -> None:
        self.options = options
        self.hub = hub  # what outbound middleware sees as ``ctx.hub``
        self.backplane = backplane
        self.registry = registry
        self.outbox = outbox
        self.history = history
        self.stats = stats
        self.bus = bus
        self.clock = clock
        #: The broadcast observer (``realtime_lab.instrument.Recorder``; ``hub.recorder``).
        self.probe: BroadcastProbe | None = None
        #: The outbound middleware chain (None: no middleware takes part).
        self.chain: Callable[[Outbound], Any] | None = None

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Wrap the publish in every middleware that has an ``outbound`` method."""
        self.chain = compose(middleware, self._endpoint, "outbound")

    # ------------------------------------------------------------------ origin

    def publish(self, name: str, data: Any, sender: str | None, exclude: Session | None = None,
                priority: Priority = Priority.NORMAL, event: str | None = None) -> int:
        """Publish ``data`` to channel ``name`` on every node; return this node's
        recipient count. ``exclude``: a session of this node that must not get it;
        ``event``: the name the ``message`` carries (docs/protocol.md, ``publish``)."""
        self.stats.published += 1
        msg = messages.channel_message(name, data, sender, event)
        chain = self.chain
        if chain is None:
            return self._send(name, msg, exclude, priority, None)
        channel = self.registry.channels.get(name)
        ctx = Outbound(name, msg, priority, sender, len(channel.subscribers) if channel else 0,
                       self.clock(), self.hub, exclude)
        return int(chain(ctx) or 0)

    def _endpoint(self, ctx: Outbound) -> int:
        return self._send(ctx.channel, ctx.message, ctx.exclude, Priority(ctx.priority), ctx)

    def _send(self, name: str, msg: dict[str, Any], exclude: Session | None,
              priority: Priority, ctx: Outbound | None) -> int:
        """The recorder's stamp, encode once, hand it to the backplane."""
        probe = self.probe
        t0 = probe.begin(msg) if probe is not None else 0.0
        pub = Publication(name, codec.encode(msg), self.backplane.node_id,
                          exclude.id if exclude is not None else "", priority, msg,
                          self.history.rule(name) if self.options.history else None,
                          ctx.compress if ctx is not None else None, t0=t0)
        if probe is not None:
            pub.t1 = probe.clock()
        delivered = self.backplane.publish(pub)
        if ctx is not None:
            ctx.size = pub.size
        bus = self.bus
        if not pub.size and bus.active:  # not delivered here (yet): no frame, no size
            bus.emit(ev.MessagePublished(at=self.clock(), channel=name, user=msg.get("from"),
                                         priority=priority.label))
        return delivered

    # ------------------------------------------------------------------ every node

    def on_publication(self, pub: Publication) -> int:
        """Deliver ``pub`` to this node's subscribers of its channel; return how many
        got it (the fan-out of a large channel may finish in later loop turns)."""
        channel = self.registry.channels.get(pub.channel)
        if channel is None:
            return 0
        subscribers = channel.subscribers
        targets = list(subscribers.values())
        fanout = len(targets)  # the sender among them, if subscribed
        skip = self.history.admit(pub)
        excluded: Session | None = None
        if pub.exclude and pub.origin == self.backplane.node_id:
            excluded = subscribers.get(pub.exclude)
            if excluded is not None:
                if skip:
                    skip = {*skip, pub.exclude}
                else:
                    targets.remove(excluded)
        frame = text_frame(pub.text)
        pub.size = size = len(frame)
        probe = self.probe
        if probe is None:
            delivered = self.outbox.fan_out(targets, frame, pub.priority, pub.message,
                                            skip=skip)
        else:
            t0, t1 = pub.t0, pub.t1
            if pub.message is None:  # from another node (or numbered by a broker)
                t0 = t1 = probe.clock()
            delivered = self.outbox.fan_out(targets, frame, pub.priority, pub.message,
                                            skip=skip)
            probe.end(channel, size, delivered, t0, t1, excluded, fanout=fanout)
        channel.messages += 1
        bus = self.bus
        if bus.active:  # built only for handlers whose type filter can match (bus.wants)
            now, name, label = self.clock(), pub.channel, pub.priority.label
            sender = pub.message.get("from") if pub.message is not None else None
            if pub.message is not None and bus.wants("message.published"):
                bus.emit(ev.MessagePublished(at=now, channel=name, user=sender, size=size,
                                             priority=label))
            if bus.wants("message.delivered"):
                bus.emit(ev.MessageDelivered(at=now, channel=name, user=sender,
                                             count=delivered, size=size, priority=label))
        return delivered

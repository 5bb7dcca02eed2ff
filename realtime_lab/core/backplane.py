"""The backplane: how a publish reaches every node's subscribers, this node's included.

One publish path for one server and for many (issue 14, docs/architecture.md)::

    PublishPath.publish -> Backplane.publish(Publication) -> on_publication (every node)
                                                          -> Outbox.fan_out

A :class:`Publication` is one channel message, encoded once on the node it was
published on (after the outbound middleware and the recorder's stamp), with what the
nodes need to deliver it: the origin node, the session of that node that must not
get it, its priority and, for a history channel, its offset and epoch.

:class:`LocalBackplane` is the default: one server, no other node. Its ``publish``
numbers a history channel's message (core/history.py) and calls the listener's
``on_publication`` at once, before it returns: a single server pays one function
call. ``realtime_lab.broker.BrokerBackplane`` is the other one: it hands the
publication to a broker and calls ``on_publication`` for what the broker delivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from realtime_lab.core.outbound import Priority

if TYPE_CHECKING:
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.presence_sync import MemberSource
    from realtime_lab.core.session import Session


class Retention(Protocol):
    """How much of a channel's history to keep (``core.history.HistoryRule`` is one)."""

    @property
    def size(self) -> int: ...
    @property
    def ttl(self) -> float | None: ...


@dataclass(eq=False, slots=True)
class Publication:
    """One channel message on its way to every node's subscribers.

    ``text`` is the message encoded as JSON, once, on the ``origin`` node;
    ``exclude`` the id of a session of the origin node that must not get it
    (``echo_to_sender=False``) or "". On the origin node ``message`` is the dict
    ``text`` was encoded from (a codec other than JSON encodes it without decoding
    ``text``), ``history`` the channel's history rule (None: not a history channel)
    and ``t0``/``t1`` the recorder's start and end of encoding. ``offset`` and
    ``epoch`` are set once the message is numbered (history channels). ``size`` is
    the bytes of the frame built from ``text``, set by the node that delivers it.
    """

    channel: str
    text: str
    origin: str
    exclude: str = ""
    priority: Priority = Priority.NORMAL
    message: dict[str, Any] | None = None
    history: Retention | None = None
    compress: bool | None = None  # the outbound middleware's decision (ctx.compress)
    offset: int = 0
    epoch: str = ""
    t0: float = 0.0
    t1: float = 0.0
    size: int = 0


def numbered_text(text: str, offset: int, epoch: str) -> str:
    """``text`` (an encoded JSON object) with ``offset`` and ``epoch`` appended."""
    return f'{text[:-1]},"offset":{offset},"epoch":"{epoch}"}}'


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What a backplane read of a channel's history gave, in one atomic step.

    ``texts`` are the retained messages after the asked offset (oldest first,
    encoded, with their ``offset`` and ``epoch``); ``first`` is the offset of the
    oldest message still retained (``offset + 1`` when none is); ``offset`` and
    ``epoch`` are the channel's current position.
    """

    epoch: str
    offset: int
    first: int
    texts: list[str]

    def complete_since(self, offset: int, epoch: str) -> bool:
        """Whether the retained messages are all that was published after ``offset``."""
        return epoch == self.epoch and 0 <= offset <= self.offset and self.first <= offset + 1


class BackplaneListener(Protocol):
    """What a backplane calls back on its node (``core.publish.PublishPath``)."""

    def on_publication(self, pub: Publication) -> int:
        """Deliver ``pub`` to this node's subscribers; return how many get it."""


class Backplane(Protocol):
    """How a publication reaches the nodes (this one included)."""

    node_id: str

    def attach(self, listener: BackplaneListener) -> None:
        """Deliver publications to ``listener`` from now on."""

    def publish(self, pub: Publication) -> int:
        """Send ``pub`` to every node; return this node's deliveries (or, when they
        happen later, the subscribers it will be delivered to)."""


#: ``answer(read)``: what a subscribe waits for is there (``read``: the channel's
#: history position and missed messages read from the broker, or None).
Answer = Callable[[HistoryRead | None], None]


class Cluster(Backplane, Protocol):
    """A backplane with other nodes (``realtime_lab.broker.BrokerBackplane``).

    It also carries presence: the hub's presence service tells it every local change
    and reads from it the cluster-wide members of the channels this node has
    subscribers for (the one truth every reader uses with a broker).
    """

    def subscribed(self, session: Session, channel: Channel, answer: Answer) -> None:
        """A local session joined ``channel``: count it cluster-wide, then call
        ``answer`` once the node gets the channel's publications (the hub sends the
        ``subscribed`` reply then)."""

    def left(self, session: Session, channel: Channel, reason: str = "") -> None:
        """A local session left ``channel`` (already removed from it); ``reason``:
        left, closed, timeout or kicked."""

    def kick(self, name: str, user: str, reason: str) -> None:
        """``user`` was kicked from ``name`` here: kick its connections on every node."""

    def updated(self, channel: Channel, user: str, changed: list[str]) -> None:
        """Local member ``user`` of ``channel`` has a new state or metadata (``changed``)."""

    def presence(self, name: str) -> dict[str, dict[str, object]] | None:
        """Cluster-wide members of ``name`` and their info (None: not known here)."""

    def counts(self, name: str) -> tuple[int, int] | None:
        """Cluster-wide ``(subscribers, members)`` of ``name`` (None: not known here)."""

    def member_source(self, name: str) -> MemberSource | None:
        """The cluster-wide member list a new subscriber of ``name`` gets."""


class LocalBackplane:
    """One server: number a history channel's message, deliver it here, at once."""

    __slots__ = ("listener", "node_id", "number")

    def __init__(self, node_id: str, number: Callable[[Publication], None]) -> None:
        self.node_id = node_id
        #: Gives a history channel's message its offset and epoch (core/history.py).
        self.number = number
        self.listener: BackplaneListener | None = None

    def attach(self, listener: BackplaneListener) -> None:
        self.listener = listener

    def publish(self, pub: Publication) -> int:
        if pub.history is not None:
            self.number(pub)
        listener = self.listener
        return listener.on_publication(pub) if listener is not None else 0

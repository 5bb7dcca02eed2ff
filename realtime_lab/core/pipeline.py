"""The message paths middleware wraps: the contexts they see and how a chain is built.

A middleware is an object with ``inbound(ctx, call_next)`` and/or
``outbound(ctx, call_next)`` methods (a plain function counts as inbound). Each
gets the context and the next handler, Starlette style: it may look at or change
the context, call ``call_next(ctx)`` and return its result, skip it (the message
is dropped: ``message.dropped`` with reason ``middleware``, and an ``error``
``message_refused`` when the message had an ``id``), or raise a
:class:`~realtime_lab.errors.ProtocolError` (the client gets that error code).
realtime_lab.middleware has ready-made ones.

* **Inbound** runs once per message a client sends, after JSON decoding and
  before the hub parses and dispatches it. It may return an awaitable; the
  transport then waits for it before reading that connection's next message.
* **Outbound** runs once per broadcast, before the message is encoded (so
  encode-once holds: it never runs per subscriber). It is synchronous; the
  endpoint returns the number of subscribers the message was queued for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

from realtime_lab.core.hooks import MaybeAwaitable

if TYPE_CHECKING:
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.outbound import Priority
    from realtime_lab.core.requests import Request
    from realtime_lab.core.session import Session
    from realtime_lab.core.stats import HubStats

C = TypeVar("C")
R = TypeVar("R")

InboundNext: TypeAlias = "Callable[[Inbound], MaybeAwaitable[None]]"
"""The next handler of the inbound chain: ``call_next(ctx)`` passes the message on
(None, or an awaitable when an async middleware or hook is still working)."""
OutboundNext: TypeAlias = "Callable[[Outbound], int]"
"""The next handler of the outbound chain: returns the number of recipients."""
Next: TypeAlias = Callable[[C], R]
"""The next handler of a chain, generic in its context and result: ``InboundNext`` is
``Next[Inbound, MaybeAwaitable[None]]``, ``OutboundNext`` is ``Next[Outbound, int]``
(kept for existing middleware; a bare ``Next`` leaves both open)."""


class HubView(Protocol):
    """What a middleware sees of the hub as ``ctx.hub`` (the
    :class:`~realtime_lab.core.hub.Hub`; declared here so that this module, below the
    hub, need not import it)."""

    @property
    def options(self) -> ServerOptions: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def stats(self) -> HubStats: ...

    @property
    def sessions(self) -> dict[str, Session]: ...

    def publish(self, channel: str, data: object, *, sender: str | None = None,
                priority: Priority | str = ..., event: str | None = None,
                exclude: Session | None = None) -> int:
        """Publish ``data`` to ``channel`` (``Hub.publish``)."""

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close ``session`` with ``code`` (``Hub.close``)."""


@dataclass(eq=False, slots=True)
class Inbound:
    """One client message on its way in. ``message`` is the decoded value (JSON or
    MessagePack; a dict for a well-formed message, but a client may send any value)."""

    session: Session
    message: object
    size: int
    now: float
    hub: HubView
    extra: dict[str, object] = field(default_factory=dict)
    #: The request this message is (core/requests.py). The hub's endpoint marks it as
    #: reached; when the chain returns without that, the message was dropped.
    request: Request | None = None

    @property
    def type(self) -> str | None:
        msg = self.message
        return msg.get("type") if isinstance(msg, dict) else None

    @property
    def channel(self) -> str | None:
        msg = self.message
        channel = msg.get("channel") if isinstance(msg, dict) else None
        return channel if isinstance(channel, str) else None


@dataclass(eq=False, slots=True)
class Outbound:
    """One broadcast on its way out, before encoding. ``message`` is the wire dict."""

    channel: str
    message: dict[str, object]
    priority: int
    sender: str | None
    subscribers: int
    now: float
    hub: HubView
    exclude: Session | None = None
    compress: bool | None = None
    size: int = 0  # bytes of the frame, set once the endpoint has encoded it
    extra: dict[str, object] = field(default_factory=dict)


def _link(fn: Callable[[C, Callable[[C], R]], R], nxt: Callable[[C], R]) -> Callable[[C], R]:
    def handler(ctx: C) -> R:
        return fn(ctx, nxt)

    return handler


def compose(middleware: Sequence[object], endpoint: Callable[[C], R],
            direction: str) -> Callable[[C], R] | None:
    """Wrap ``endpoint`` in every middleware that has a ``direction`` method.

    The first middleware in the list is the outermost (it sees the message first
    on the way in). Returns None when no middleware takes part, so the hub can
    call its endpoint directly.
    """
    handler = endpoint
    used = False
    for mw in reversed(middleware):
        fn = getattr(mw, direction, None)
        if fn is None and direction == "inbound" and callable(mw) and not hasattr(mw, "outbound"):
            fn = mw
        if fn is None or getattr(fn, "passthrough", False):
            continue
        handler = _link(fn, handler)
        used = True
    return handler if used else None

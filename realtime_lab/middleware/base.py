"""The middleware base class: override ``inbound`` and/or ``outbound``.

Starlette style: each method gets the context and the next handler and returns
what the next handler returns. Pass-through methods are skipped when the chain
is built, so a middleware that only looks at inbound messages costs nothing on
the outbound path. See realtime_lab.core.pipeline for the contexts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from realtime_lab.core.hooks import MaybeAwaitable
from realtime_lab.core.pipeline import Inbound, InboundNext, Next, Outbound, OutboundNext

if TYPE_CHECKING:
    from realtime_lab.core.session import Session

__all__ = ["Inbound", "InboundNext", "MaybeAwaitable", "Middleware", "Next", "Outbound",
           "OutboundNext", "maybe_await"]

F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")


def _passthrough(fn: F) -> F:
    fn.passthrough = True  # type: ignore[attr-defined]
    return fn


class Middleware:
    """Base of realtime_lab middleware; every method passes through by default."""

    @_passthrough
    def inbound(self, ctx: Inbound, call_next: InboundNext) -> MaybeAwaitable[None]:
        """One client message (decoded JSON) on its way to the hub.

        Return what ``call_next(ctx)`` returns; returning without calling it drops
        the message (``message.dropped``, reason ``middleware``; ``message_refused``
        when it had an ``id``).
        """
        return call_next(ctx)

    @_passthrough
    def outbound(self, ctx: Outbound, call_next: OutboundNext) -> int:
        """One broadcast before encoding; returns the number of recipients."""
        return int(call_next(ctx))

    def connection_closed(self, session: Session) -> None:
        """Forget per-connection state."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


async def maybe_await(value: MaybeAwaitable[T]) -> T:
    """Await ``value`` if it is awaitable (for async middleware calling ``call_next``)."""
    if inspect.isawaitable(value):
        return await value
    return value

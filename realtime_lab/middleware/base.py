"""The middleware base class: override ``inbound`` and/or ``outbound``.

Starlette style: each method gets the context and the next handler and returns
what the next handler returns. Pass-through methods are skipped when the chain
is built, so a middleware that only looks at inbound messages costs nothing on
the outbound path. See realtime_lab.core.pipeline for the contexts.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from realtime_lab.core.pipeline import Inbound, Next, Outbound

if TYPE_CHECKING:
    from realtime_lab.core.session import Session

__all__ = ["Inbound", "Middleware", "Next", "Outbound", "maybe_await"]


def _passthrough(fn: Any) -> Any:
    fn.passthrough = True
    return fn


class Middleware:
    """Base of realtime_lab middleware; every method passes through by default."""

    @_passthrough
    def inbound(self, ctx: Inbound, call_next: Next) -> Any:
        """One client message (decoded JSON) on its way to the hub."""
        return call_next(ctx)

    @_passthrough
    def outbound(self, ctx: Outbound, call_next: Next) -> int:
        """One broadcast before encoding; returns the number of recipients."""
        return int(call_next(ctx))

    def connection_closed(self, session: Session) -> None:
        """Forget per-connection state."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (for async middleware calling ``call_next``)."""
    if inspect.isawaitable(value):
        return await value
    return value

"""The Compression middleware: the permessage-deflate policy in the middleware stack.

The policy itself is :class:`realtime_lab.protocol.deflate.CompressionPolicy`
(one class for the whole package; docs/compression.md lists its options). With
``Compression(policy)`` in the stack, the transport negotiates with that policy
instead of ``ServerOptions.compression``, and each outbound broadcast is marked
with ``ctx.compress`` so later middleware can see the decision.
"""

from __future__ import annotations

from typing import Any

from realtime_lab.middleware.base import Middleware, Outbound, OutboundNext
from realtime_lab.protocol.deflate import CompressionPolicy

__all__ = ["Compression", "CompressionPolicy"]


class Compression(Middleware):
    """Carries a :class:`CompressionPolicy` and marks each broadcast with its decision.

    ``Compression(policy)`` or ``Compression(level=9, threshold=512, ...)`` with the
    policy's keyword arguments.
    """

    def __init__(self, policy: CompressionPolicy | None = None, **options: Any) -> None:
        self.policy = policy or CompressionPolicy(**options)

    @property
    def compression_policy(self) -> CompressionPolicy:
        """The policy the transport negotiates (``Hub.compression`` reads it)."""
        return self.policy

    def outbound(self, ctx: Outbound, call_next: OutboundNext) -> int:
        ctx.compress = self.policy.enabled
        return int(call_next(ctx))

    def __repr__(self) -> str:
        return f"Compression({self.policy})"

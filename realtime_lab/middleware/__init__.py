"""Middleware around the inbound and outbound message paths (docs/middleware.md)."""

from realtime_lab.middleware.base import (
    Inbound,
    InboundNext,
    MaybeAwaitable,
    Middleware,
    Next,
    Outbound,
    OutboundNext,
    maybe_await,
)
from realtime_lab.middleware.compression import Compression, CompressionPolicy
from realtime_lab.middleware.logging import Logging
from realtime_lab.middleware.rate_limit import Rate, RateLimit

__all__ = [
    "Compression",
    "CompressionPolicy",
    "Inbound",
    "InboundNext",
    "Logging",
    "MaybeAwaitable",
    "Middleware",
    "Next",
    "Outbound",
    "OutboundNext",
    "Rate",
    "RateLimit",
    "maybe_await",
]

"""Compression policy for permessage-deflate (RFC 7692).

This is the policy only: whether the server offers the extension, the deflate
level and window, and the size below which a message is sent uncompressed. The
mechanics (compressing each broadcast frame once) come with the binary and
compression work; they read this object. ``Compression(policy)`` as a
middleware marks each outbound broadcast with ``ctx.compress``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realtime_lab.middleware.base import Middleware, Next, Outbound


@dataclass(frozen=True, kw_only=True)
class CompressionPolicy:
    """Options of permessage-deflate, with their defaults.

    Attributes:
        offer: whether the server accepts a client's permessage-deflate offer.
        level: zlib level 0-9 (1 fastest, 9 smallest; 6 is zlib's default).
        window_bits: server_max_window_bits, 9-15 (smaller uses less memory per
            connection, compresses less).
        mem_level: zlib memory level 1-9.
        threshold: messages smaller than this many bytes are not compressed.
        no_context_takeover: compress each message on its own (no shared window),
            which lets one compressed frame go to every subscriber.
    """

    offer: bool = False
    level: int = 6
    window_bits: int = 15
    mem_level: int = 8
    threshold: int = 1024
    no_context_takeover: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 9:
            raise ValueError("level must be 0-9")
        if not 9 <= self.window_bits <= 15:
            raise ValueError("window_bits must be 9-15")
        if not 1 <= self.mem_level <= 9:
            raise ValueError("mem_level must be 1-9")
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")

    def should_compress(self, size: int) -> bool:
        return self.offer and size >= self.threshold

    def tornado_options(self) -> dict[str, Any] | None:
        """What ``WebSocketHandler.get_compression_options`` returns (None: not offered)."""
        if not self.offer:
            return None
        return {"compression_level": self.level, "mem_level": self.mem_level}


class Compression(Middleware):
    """Carries a :class:`CompressionPolicy` and marks each broadcast with its decision."""

    def __init__(self, policy: CompressionPolicy | None = None, **options: Any) -> None:
        self.policy = policy or CompressionPolicy(**options)

    def outbound(self, ctx: Outbound, call_next: Next) -> int:
        ctx.compress = self.policy.offer
        return int(call_next(ctx))

    def __repr__(self) -> str:
        return f"Compression({self.policy})"

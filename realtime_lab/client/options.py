"""Client options: one frozen dataclass, every default in one place (docs/client.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from realtime_lab.client.backoff import Backoff


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Options of a :class:`~realtime_lab.client.Client`. All keyword-only, all defaulted.

    Attributes:
        reconnect: reconnect automatically after a lost connection (off by default in
            the Python client, which doubles as a test probe where "the server closed
            me" is the observation; on by default in the browser client).
        backoff: delays between attempts: 0.5 s doubling up to 20 s, full jitter.
        max_attempts: consecutive failed attempts before giving up (None: never).
        reconnect_now_window: after a close whose advice is "reconnect at once"
            (1001 going away, 1012 restart, 42xx), the first attempt waits a random
            time in ``[0, window]`` seconds, so a restart is not met by every client
            in the same millisecond.
        connect_timeout: seconds for one attempt (TCP, handshake and welcome).
        request_timeout: seconds to wait for the reply to a request.
        buffer_size: messages kept while reconnecting, sent after the restore; one
            more raises :class:`SendBufferFull`. 0 refuses at once.
        heartbeat: watch the server's pings; if nothing arrives for
            ``heartbeat_timeout`` the connection is treated as dead (half-open).
        heartbeat_timeout: seconds of silence before that; None takes the server's
            ``interval + timeout`` from the welcome message.
        inbox_size: messages kept for :meth:`Client.recv`; when full the client stops
            reading the socket (a client that never reads is a slow consumer).
        max_message_bytes: largest inbound message.
        seed: seed of the client's jitter RNG (None: random); for reproducible runs.
        protocol: ``"json"`` (text frames) or ``"msgpack"`` (the binary protocol, asked
            for with the ``realtime-lab.v1.msgpack`` subprotocol; needs ``msgpack``).
        compression: offer permessage-deflate (the server compresses a broadcast
            once for every connection that accepted it). A server that answers
            ``client_no_context_takeover`` is connected to again without it:
            Tornado's client cannot honour that parameter (docs/compression.md).
        receipts: report the delivery latency of messages stamped by a recording
            server (``ts``) back to it in small batches, so ``server.record()``
            fills its ``latency`` table (only to servers that announce ``receipts``
            in their welcome; docs/protocol.md).
    """

    reconnect: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = None
    reconnect_now_window: float = 0.5
    connect_timeout: float = 10.0
    request_timeout: float = 10.0
    buffer_size: int = 100
    heartbeat: bool = True
    heartbeat_timeout: float | None = None
    inbox_size: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    seed: int | None = None
    protocol: str = "json"
    compression: bool = False
    receipts: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in ("json", "msgpack"):
            raise ValueError(f"protocol must be 'json' or 'msgpack', got {self.protocol!r}")
        for name in ("connect_timeout", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")
        if self.buffer_size < 0 or self.inbox_size <= 0:
            raise ValueError("buffer_size must be >= 0 and inbox_size > 0")
        if self.reconnect_now_window < 0:
            raise ValueError("reconnect_now_window must be >= 0")

    def with_changes(self, **changes: Any) -> ClientOptions:
        """A copy with some options changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

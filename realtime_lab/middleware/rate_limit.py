"""RateLimit: token buckets per connection, per client IP and per message type.

Each inbound message takes one token from every bucket that applies to it: the
connection's bucket, the client IP's bucket (shared by all its connections) and
the connection's bucket for that message type. When any is empty the message is
not handled and the client gets error ``rate_limited``; after ``max_violations``
refusals within ``violation_window`` seconds the connection is closed with 4102
(error ``rate_limit_abuse``). A bucket refills at ``rate`` tokens per second up to
``burst``. Time is the hub's clock, so tests can drive it with a fake clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from realtime_lab.errors import RateLimitAbuse, RateLimited
from realtime_lab.middleware.base import Inbound, InboundNext, MaybeAwaitable, Middleware

if TYPE_CHECKING:
    from realtime_lab.core.session import Session

MAX_IP_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens per second, at most ``burst`` saved up."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")

    @classmethod
    def of(cls, value: Rate | float | tuple[float, int] | None) -> Rate | None:
        """A Rate from a Rate, ``per_second`` (burst = one second's worth) or a pair."""
        if value is None or isinstance(value, Rate):
            return value
        if isinstance(value, tuple):
            return cls(float(value[0]), int(value[1]))
        return cls(float(value), max(1, round(value)))


class TokenBucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate.per_second
        self.burst = float(rate.burst)
        self.tokens = self.burst
        self.last = now

    def refill(self, now: float) -> float:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        return self.tokens


class RateLimit(Middleware):
    """Refuse messages beyond the configured rates (see the module docstring).

    Args:
        per_connection: rate of messages for one connection (None: no limit).
        per_ip: rate for all connections of one client IP together (None: no limit).
        per_type: rates by message type (``{"publish": (5, 10)}``), per connection.
        max_violations: refusals within ``violation_window`` that close the
            connection with 4102; None never closes.
        violation_window: seconds over which violations are counted.
    """

    def __init__(self, *, per_connection: Rate | float | tuple[float, int] | None = (50, 100),
                 per_ip: Rate | float | tuple[float, int] | None = (500, 1000),
                 per_type: dict[str, Rate | float | tuple[float, int]] | None = None,
                 max_violations: int | None = 20, violation_window: float = 10.0) -> None:
        self.per_connection = Rate.of(per_connection)
        self.per_ip = Rate.of(per_ip)
        self.per_type = {k: r for k, v in (per_type or {}).items() if (r := Rate.of(v))}
        self.max_violations = max_violations
        self.violation_window = violation_window
        self._conn: dict[str, TokenBucket] = {}
        self._ip: dict[str, TokenBucket] = {}
        self._typed: dict[str, dict[str, TokenBucket]] = {}
        self._violations: dict[str, deque[float]] = {}
        self.allowed = 0
        self.refused = 0
        self.closed = 0

    def _bucket(self, table: dict[Any, TokenBucket], key: Any, rate: Rate,
                now: float) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(rate, now)
        return bucket

    def inbound(self, ctx: Inbound, call_next: InboundNext) -> MaybeAwaitable[None]:
        now, session = ctx.now, ctx.session
        buckets: list[TokenBucket] = []
        if self.per_connection is not None:
            buckets.append(self._bucket(self._conn, session.id, self.per_connection, now))
        if self.per_ip is not None:
            if len(self._ip) > MAX_IP_BUCKETS:
                self._prune_ips(now)
            buckets.append(self._bucket(self._ip, session.remote, self.per_ip, now))
        mtype = ctx.type
        typed = self.per_type.get(mtype) if mtype is not None else None
        if typed is not None:
            assert mtype is not None
            table = self._typed.setdefault(session.id, {})
            buckets.append(self._bucket(table, mtype, typed, now))
        for bucket in buckets:
            if bucket.refill(now) < 1.0:
                self._refuse(session, now, mtype)
        for bucket in buckets:
            bucket.tokens -= 1.0
        self.allowed += 1
        return call_next(ctx)

    def _refuse(self, session: Session, now: float, mtype: str | None) -> NoReturn:
        self.refused += 1
        if self.max_violations is not None:
            recent = self._violations.setdefault(session.id, deque())
            recent.append(now)
            while recent and now - recent[0] > self.violation_window:
                recent.popleft()
            if len(recent) >= self.max_violations:
                self.closed += 1
                raise RateLimitAbuse(
                    f"{len(recent)} messages over the rate limit in {self.violation_window} s")
        raise RateLimited(f"too many {mtype or 'messages'}; slow down")

    def _prune_ips(self, now: float) -> None:
        for ip in [ip for ip, b in self._ip.items() if b.refill(now) >= b.burst]:
            del self._ip[ip]

    def connection_closed(self, session: Session) -> None:
        self._conn.pop(session.id, None)
        self._violations.pop(session.id, None)
        self._typed.pop(session.id, None)

    def __repr__(self) -> str:
        return (f"RateLimit(per_connection={self.per_connection}, per_ip={self.per_ip}, "
                f"per_type={self.per_type})")

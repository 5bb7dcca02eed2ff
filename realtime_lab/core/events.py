"""The event bus: typed frozen events, filtered handlers in priority order, bounded streams.

The hub emits one event per thing that happens (a broadcast emits one
``message.delivered`` with its delivery count, never one event per subscriber)
and only builds it when :attr:`EventBus.active` is true, so the hot path costs a
single attribute check when nobody listens.

``async for event in bus.stream(...)`` (``server.events(...)``) reads a bounded
queue. Overflow policy: when the queue is full the **oldest** event is dropped and
counted in :attr:`EventStream.dropped`; the server is never slowed by a reader.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import inspect
import itertools
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from realtime_lab.logthrottle import LogThrottle

log = logging.getLogger("realtime_lab.core")

# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: when (hub clock), and which session, user and channel."""

    type: ClassVar[str] = "event"
    at: float
    session: str | None = None
    user: str | None = None
    channel: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A flat dict (``type`` first) for logs and DataFrames."""
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected(Event):
    type: ClassVar[str] = "connection.opened"
    remote: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected(Event):
    type: ClassVar[str] = "connection.closed"
    code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionRefused(Event):
    """A connection refused before it was accepted (limit, token, hook, origin)."""

    type: ClassVar[str] = "connection.refused"
    remote: str = ""
    code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSubscribed(Event):
    type: ClassVar[str] = "channel.subscribed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelUnsubscribed(Event):
    type: ClassVar[str] = "channel.unsubscribed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOccupied(Event):
    """The first subscriber arrived: the channel now exists."""

    type: ClassVar[str] = "channel.occupied"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelVacated(Event):
    """The last subscriber left: the channel is gone."""

    type: ClassVar[str] = "channel.vacated"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagePublished(Event):
    type: ClassVar[str] = "message.published"
    size: int = 0
    priority: str = "normal"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDelivered(Event):
    """One broadcast queued for ``count`` subscribers (one event per broadcast)."""

    type: ClassVar[str] = "message.delivered"
    count: int = 0
    size: int = 0
    priority: str = "normal"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDropped(Event):
    """A message not delivered: ``reason`` is ``queue_full``, ``hook`` or ``middleware``."""

    type: ClassVar[str] = "message.dropped"
    priority: str = "normal"
    size: int = 0
    reason: str = "queue_full"


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceJoin(Event):
    type: ClassVar[str] = "presence.join"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceLeave(Event):
    type: ClassVar[str] = "presence.leave"
    reason: str = "left"  # left (unsubscribed), closed, timeout, kicked


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceUpdate(Event):
    type: ClassVar[str] = "presence.update"
    meta: dict[str, Any] = field(default_factory=dict)
    state: str | None = None  # the member's state after the change
    changed: tuple[str, ...] = ()  # "state", "meta", "connections"


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceTimeout(Event):
    """A member left because its connection timed out (heartbeat or idle)."""

    type: ClassVar[str] = "presence.timeout"
    reason: str = "timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatTimeout(Event):
    type: ClassVar[str] = "heartbeat.timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatChanged(Event):
    """The adaptive heartbeat moved to a new interval (seconds)."""

    type: ClassVar[str] = "heartbeat.changed"
    interval: float = 0.0
    timeout: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitExceeded(Event):
    """A limit was hit: ``limit`` names the option, ``code`` the error or close code."""

    type: ClassVar[str] = "limit.exceeded"
    limit: str = ""
    code: str | int = ""
    remote: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    """An error reply sent to a client (``code`` is the wire error code)."""

    type: ClassVar[str] = "error"
    code: str = ""
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (Connected, Disconnected, ConnectionRefused, ChannelSubscribed,
                ChannelUnsubscribed, ChannelOccupied, ChannelVacated, MessagePublished,
                MessageDelivered, MessageDropped, PresenceJoin, PresenceLeave, PresenceUpdate,
                PresenceTimeout, HeartbeatTimeout, HeartbeatChanged, LimitExceeded, ErrorEvent)
}

# ---------------------------------------------------------------------- filters


def _globs(value: str | Iterable[str] | None) -> re.Pattern[str] | None:
    if value is None:
        return None
    pats = [value] if isinstance(value, str) else list(value)
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats))


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a handler or stream wants. Every given criterion must match.

    Args:
        types: glob(s) on the event type (``"presence.*"``, ``"message.dropped"``).
        channels: glob(s) on the channel; events without a channel never match.
        users: user id(s); events without a user never match.
        where: any predicate on the event.
    """

    types: str | tuple[str, ...] | None = None
    channels: str | tuple[str, ...] | None = None
    users: str | frozenset[str] | None = None
    where: Callable[[Event], bool] | None = None
    _types_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _channels_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _users: frozenset[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_types_re", _globs(self.types))
        object.__setattr__(self, "_channels_re", _globs(self.channels))
        users = self.users
        object.__setattr__(self, "_users", None if users is None else (
            frozenset([users]) if isinstance(users, str) else frozenset(users)))

    def matches(self, event: Event) -> bool:
        if self._types_re is not None and self._types_re.match(event.type) is None:
            return False
        if self._channels_re is not None and (
                event.channel is None or self._channels_re.match(event.channel) is None):
            return False
        if self._users is not None and event.user not in self._users:
            return False
        return self.where is None or bool(self.where(event))


FilterSpec = EventFilter | str | tuple[str, ...] | Callable[[Event], bool] | None


def make_filter(spec: FilterSpec = None, *, types: str | tuple[str, ...] | None = None,
                channel: str | tuple[str, ...] | None = None,
                user: str | frozenset[str] | None = None,
                where: Callable[[Event], bool] | None = None) -> EventFilter | None:
    """Build a filter from a spec (filter, type glob(s) or predicate) and keyword criteria."""
    if isinstance(spec, EventFilter):
        if types is None and channel is None and user is None and where is None:
            return spec
        base = spec
        extra = EventFilter(types, channel, user, where)
        return EventFilter(where=lambda e: base.matches(e) and extra.matches(e))
    if isinstance(spec, str | tuple | list):
        types = (spec if isinstance(spec, str) else tuple(spec)) if types is None else types
    elif callable(spec):
        pred, more = spec, where
        where = pred if more is None else (lambda e: pred(e) and more(e))
    if types is None and channel is None and user is None and where is None:
        return None
    return EventFilter(types, channel, user, where)


# ---------------------------------------------------------------------- bus

Handler = Callable[[Event], object]
STOP = object()
"""Return ``STOP`` from a handler to keep lower-priority handlers from seeing the event."""


@dataclass(eq=False, slots=True)
class Subscription:
    handler: Handler
    filter: EventFilter | None
    priority: int
    order: int
    bus: EventBus | None = None

    def cancel(self) -> None:
        """Stop receiving events (idempotent)."""
        if self.bus is not None:
            self.bus.unsubscribe(self)


class EventBus:
    """Synchronous dispatch: handlers run in priority order (highest first, then by age)."""

    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()
        self._wanted: dict[str, bool] = {}
        self._order = itertools.count()
        self.active = False
        self.emitted = 0
        self.handler_errors = 0
        self._log = LogThrottle(log)  # a failing handler fails on every event: one record a minute

    def subscribe(self, handler: Handler, filter: FilterSpec = None, *, priority: int = 0,
                  **criteria: Any) -> Subscription:
        """Call ``handler(event)`` for matching events; return a cancellable subscription.

        A handler may be sync or async (an async one runs as a task). Exceptions are
        logged and counted in :attr:`handler_errors`, never raised to the emitter.
        """
        sub = Subscription(handler, make_filter(filter, **criteria), priority, next(self._order),
                           self)
        subs = list(self._subs)
        keys = [(-s.priority, s.order) for s in subs]
        subs.insert(bisect.bisect(keys, (-sub.priority, sub.order)), sub)
        self._subs = tuple(subs)
        self._wanted.clear()
        self.active = True
        return sub

    on = subscribe

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs = tuple(s for s in self._subs if s is not sub)
        self._wanted.clear()
        sub.bus = None
        self.active = bool(self._subs)

    def wants(self, event_type: str) -> bool:
        """Whether any handler's type filter can match ``event_type`` (cached), so a hot
        path can skip building events nobody will see."""
        wanted = self._wanted.get(event_type)
        if wanted is None:
            wanted = self._wanted[event_type] = any(
                s.filter is None or s.filter._types_re is None
                or s.filter._types_re.match(event_type) is not None for s in self._subs)
        return wanted

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every matching handler."""
        self.emitted += 1
        for sub in self._subs:
            flt = sub.filter
            if flt is not None and not flt.matches(event):
                continue
            try:
                result = sub.handler(event)
            except Exception:
                self.handler_errors += 1
                self._log.log(f"handler_failed:{event.type}", logging.ERROR,
                              "event handler %r failed on %s", sub.handler, event.type,
                              exc_info=True)
                continue
            if result is STOP:
                break
            if inspect.isawaitable(result):
                self._spawn(result, sub.handler)

    def _spawn(self, awaitable: Any, handler: Handler) -> None:
        task = asyncio.ensure_future(awaitable)

        def done(t: asyncio.Future[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.handler_errors += 1
                self._log.log("async_handler_failed", logging.ERROR,
                              "async event handler %r failed", handler, exc_info=t.exception())

        task.add_done_callback(done)

    def stream(self, filter: FilterSpec = None, *, maxsize: int = 1000,
               **criteria: Any) -> EventStream:
        """A bounded queue of matching events, registered at once (see :class:`EventStream`)."""
        return EventStream(self, make_filter(filter, **criteria), maxsize)


class EventStream:
    """A bounded queue of events for ``async for``; overflow drops the oldest (counted).

    Use it as ``async with server.events("presence.*") as events:`` or iterate it
    directly; :meth:`close` (or leaving the ``async with``) unsubscribes it.
    """

    def __init__(self, bus: EventBus, filter: EventFilter | None, maxsize: int = 1000) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be > 0")
        self.maxsize = maxsize
        self.dropped = 0
        self.received = 0
        self._buffer: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._sub = bus.subscribe(self._put, filter, priority=-1_000_000)

    def _put(self, event: Event) -> None:
        self.received += 1
        if len(self._buffer) >= self.maxsize:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self) -> list[Event]:
        """Every buffered event, without waiting (for notebooks)."""
        out = list(self._buffer)
        self._buffer.clear()
        return out

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout``; ``EOFError`` once closed."""
        while not self._buffer:
            if self._closed:
                raise EOFError("event stream closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            finally:
                self._waiter = None
        return self._buffer.popleft()

    async def wait_for(self, filter: FilterSpec = None, *, timeout: float = 5.0,
                       **criteria: Any) -> Event:
        """The next event matching ``filter``; events before it are consumed."""
        flt = make_filter(filter, **criteria)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.get(max(0.0, deadline - loop.time()))
            if flt is None or flt.matches(event):
                return event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sub.cancel()
            self._wake()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

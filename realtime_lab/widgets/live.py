"""What the dashboard charts: a short history of samples taken from server snapshots.

:class:`LiveSeries` turns successive :class:`~realtime_lab.inspection.ServerSnapshot`
readings into per-second rates and keeps the last ``window`` seconds of them in
a bounded deque; :class:`EventLog` keeps the latest server events (joins,
leaves, reconnects, refusals, timeouts) with their reasons, merging bursts of
the same kind so a reconnect storm is one line with a count, not a thousand.
Neither touches the hub: they read snapshots and events.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_lab.core.events import Event
    from realtime_lab.inspection import ServerSnapshot

KIB = 1024.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of every chart (``None``: nothing to show for that series then)."""

    t: float
    publishes_per_s: float
    deliveries_per_s: float
    connections: int
    kib_per_connection: float | None
    rss_mib: float
    queued_kib: float
    at_risk: int
    slow_consumers: int
    heartbeat_timeouts: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class LiveSeries:
    """Samples of the last ``window`` seconds (at most ``capacity`` of them)."""

    window: float = 60.0
    capacity: int = 600
    samples: deque[Sample] = field(default_factory=deque)
    _prev: tuple[float, int, int] | None = None  # (at, published, deliveries)
    _base: tuple[int, int] | None = None  # (rss bytes, connections) at the first sample

    def add(self, snap: ServerSnapshot, rss_bytes: int, latencies_ms: list[float]) -> Sample:
        """Append the sample of ``snap`` (taken with queue totals) and return it."""
        c = snap.counters
        published, deliveries = c["published"], c["deliveries"]
        pubs = dels = 0.0
        if self._prev is not None and snap.at > self._prev[0]:
            dt = snap.at - self._prev[0]
            pubs = max(0.0, (published - self._prev[1]) / dt)
            dels = max(0.0, (deliveries - self._prev[2]) / dt)
        self._prev = (snap.at, published, deliveries)
        if self._base is None:
            self._base = (rss_bytes, snap.connection_count)
        grown = snap.connection_count - self._base[1]
        per_conn = (rss_bytes - self._base[0]) / grown / KIB if grown > 0 else None
        lat = sorted(latencies_ms)
        sample = Sample(
            t=snap.at, publishes_per_s=pubs, deliveries_per_s=dels,
            connections=snap.connection_count, kib_per_connection=per_conn,
            rss_mib=rss_bytes / KIB / KIB, queued_kib=(snap.queued_bytes or 0) / KIB,
            at_risk=snap.at_risk or 0, slow_consumers=c["slow_consumers"],
            heartbeat_timeouts=c["heartbeat_timeouts"],
            latency_p50_ms=percentile(lat, 0.5) if lat else None,
            latency_p90_ms=percentile(lat, 0.9) if lat else None,
            latency_p99_ms=percentile(lat, 0.99) if lat else None)
        self.samples.append(sample)
        while len(self.samples) > self.capacity or (
                self.samples and self.samples[0].t < snap.at - self.window - 5):
            self.samples.popleft()
        return sample

    def points(self, name: str) -> list[tuple[float, float | None]]:
        """``(t, value)`` of one :class:`Sample` field, oldest first."""
        return [(s.t, getattr(s, name)) for s in self.samples]

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def quiet(self) -> bool:
        """True when the last sample shows no traffic and empty queues."""
        s = self.last
        return s is not None and s.deliveries_per_s == 0 and s.publishes_per_s == 0 \
            and s.queued_kib == 0

    def median_latency(self) -> float | None:
        values = [s.latency_p50_ms for s in self.samples if s.latency_p50_ms is not None]
        return statistics.median(values) if values else None


#: Event types the log shows (message.* events are per broadcast: charted, not logged).
LOGGED_TYPES = ("connection.opened", "connection.closed", "connection.refused",
                "presence.join", "presence.leave", "presence.update", "presence.timeout",
                "heartbeat.timeout", "limit.exceeded", "error")


@dataclass
class LogRow:
    """One line of the event log; ``count`` > 1 when a burst of the same kind was merged."""

    at: float
    kind: str
    user: str
    channel: str
    detail: str
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "user": self.user, "channel": self.channel,
                "detail": self.detail, "count": self.count}


class EventLog:
    """The latest ``size`` server events as :class:`LogRow` s, newest last.

    A connection opened by a user whose connection closed less than
    ``reconnect_window`` seconds before is logged as ``reconnect`` with the
    downtime. Rows of the same kind, channel and detail within ``merge_within``
    seconds are merged (``count``), so a storm stays readable and bounded.
    """

    def __init__(self, size: int = 200, *, reconnect_window: float = 30.0,
                 merge_within: float = 1.0, clock: Any = time.monotonic) -> None:
        self.rows: deque[LogRow] = deque(maxlen=size)
        self.reconnect_window = reconnect_window
        self.merge_within = merge_within
        self.clock = clock
        self.version = 0  # bumped on every change: the view re-renders only then
        self.seen = 0
        self.counts: dict[str, int] = {}
        self._closed_at: OrderedDict[str, float] = OrderedDict()

    def __call__(self, event: Event) -> None:
        """The event handler (``server.on(LOGGED_TYPES, log)``)."""
        now = self.clock()
        self.seen += 1
        kind, detail = self._describe(event, now)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.add(kind, event.user or "", event.channel or "", detail, now)

    def add(self, kind: str, user: str, channel: str, detail: str, at: float) -> None:
        last = self.rows[-1] if self.rows else None
        if (last is not None and last.kind == kind and last.channel == channel
                and last.detail.split(" (down")[0] == detail.split(" (down")[0]
                and at - last.at <= self.merge_within):
            last.count += 1
            last.user, last.at, last.detail = user, at, detail
        else:
            self.rows.append(LogRow(at, kind, user, channel, detail))
        self.version += 1

    def _describe(self, event: Event, now: float) -> tuple[str, str]:
        data = event.as_dict()
        etype = event.type
        user = event.user or ""
        if etype == "connection.opened":
            closed = self._closed_at.pop(user, None)
            if closed is not None and now - closed <= self.reconnect_window:
                return "reconnect", f"back (down {now - closed:.2f} s)"
            return "connect", str(data.get("remote") or "")
        if etype == "connection.closed":
            self._closed_at[user] = now
            self._closed_at.move_to_end(user)
            while len(self._closed_at) > 10_000:
                self._closed_at.popitem(last=False)
            code = data.get("code")
            return "disconnect", f"{code if code is not None else 'no code'} " \
                                 f"{data.get('reason') or ''}".strip()
        if etype == "connection.refused":
            return "refused", f"{data.get('code')} {data.get('reason') or ''}".strip()
        if etype == "presence.join":
            return "join", ""
        if etype in ("presence.leave", "presence.timeout"):
            return "leave", str(data.get("reason") or "")
        if etype == "presence.update":
            changed = ",".join(data.get("changed") or ())
            return "update", f"{data.get('state') or ''} ({changed})" if changed else \
                str(data.get("state") or "")
        if etype == "limit.exceeded":
            return "limit", f"{data.get('limit')}: {data.get('code')}"
        if etype == "error":
            return "refused", str(data.get("code") or "")
        return etype.replace("heartbeat.timeout", "timeout"), str(data.get("reason") or "")

"""HTML for the widget views, from what a server's public API returns (pure functions).

Inputs are the lists and snapshots of :class:`~realtime_lab.widgets.source.Source`
(``channels()``, ``presence()``, ``inspect()``), so nothing here reads the hub.
Every name that comes from a client (user ids, channel names, presence
metadata) is escaped. Elements carry CSS classes and ``data-*`` attributes so
tests and stylesheets can find them (docs/widgets.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from realtime_lab.widgets.charts import CHART_STYLE, PALETTE, Series, line_chart

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from realtime_lab.inspection import ServerSnapshot
    from realtime_lab.widgets.live import LiveSeries, LogRow

STYLE = (
    "<style>"
    ".rtl-table{border-collapse:collapse;font-family:monospace;font-size:12px}"
    ".rtl-table th,.rtl-table td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    ".rtl-table th:first-child,.rtl-table td:first-child{text-align:left}"
    ".rtl-member{font-family:monospace;font-size:12px;display:inline-block;"
    "margin:1px 10px 1px 0}"
    ".rtl-roster{list-style:none;padding-left:0;margin:2px 0 6px;max-width:620px}"
    ".rtl-state{padding:0 4px;border-radius:3px;background:#e0f0e0}"
    ".rtl-metric{display:inline-block;min-width:9em;margin:2px 8px 2px 0;font-family:monospace}"
    ".rtl-metric b{font-size:14px}"
    ".rtl-state[data-state=online]{background:#d7f0d7}"
    ".rtl-state[data-state=away]{background:#fbe7b5}"
    ".rtl-state[data-state=busy]{background:#f6c9c9}"
    ".rtl-fill{display:inline-block;height:8px;background:#d62728;vertical-align:middle}"
    ".rtl-event[data-kind=reconnect] td:nth-child(2){color:#1f77b4}"
    ".rtl-event[data-kind=disconnect] td:nth-child(2),.rtl-event[data-kind=refused] "
    "td:nth-child(2),.rtl-event[data-kind=limit] td:nth-child(2),"
    ".rtl-event[data-kind=timeout] td:nth-child(2){color:#d62728}"
    ".rtl-charts{display:flex;flex-wrap:wrap;max-width:1250px}"
    ".rtl-caption{font-weight:bold;font-family:sans-serif;font-size:13px;margin:4px 0}"
    + CHART_STYLE +
    "</style>"
)


@dataclass
class Rates:
    """Per-second rates from successive counter readings."""

    last: dict[str, tuple[float, float]] = field(default_factory=dict)

    def rate(self, key: str, value: float, now: float) -> float:
        prev = self.last.get(key)
        self.last[key] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return max(0.0, (value - prev[1]) / (now - prev[0]))


def channels_html(channels: Iterable[dict[str, Any]], rates: Rates, now: float, *,
                  limit: int = 50) -> str:
    """A table: channel, subscribers, presence members, messages, messages per second."""
    ordered = sorted(channels, key=lambda c: str(c["name"]))
    rows = []
    for ch in ordered[:limit]:
        rate = rates.rate("ch:" + str(ch["name"]), float(ch["messages"]), now)
        name = escape(str(ch["name"]))
        rows.append(
            f'<tr class="rtl-channel-row" data-channel="{name}"><td>{name}</td>'
            f'<td class="rtl-subscribers">{int(ch["subscribers"])}</td>'
            f"<td>{int(ch['members'])}</td><td>{int(ch['messages'])}</td><td>{rate:.1f}</td></tr>")
    more = len(ordered) - limit
    if more > 0:
        rows.append(f'<tr><td colspan="5">... and {more} more channels</td></tr>')
    if not rows:
        rows.append('<tr class="rtl-empty"><td colspan="5">no channels yet</td></tr>')
    return (f'{STYLE}<table class="rtl-table"><caption>Channels ({len(ordered)})</caption>'
            "<tr><th>channel</th><th>subscribers</th><th>members</th><th>messages</th>"
            f"<th>msg/s</th></tr>{''.join(rows)}</table>")


def _info_html(info: dict[str, Any], default_state: str | None = None) -> str:
    """State, connection count and metadata of one member (``meta`` dict flattened)."""
    raw_meta = info.get("meta")
    meta = dict(raw_meta) if isinstance(raw_meta, dict) else {}
    meta.update({k: v for k, v in info.items() if k not in ("state", "connections", "meta")})
    state = info.get("state", meta.pop("state", None))
    if state is None:
        state = default_state
    parts = []
    if state is not None:
        parts.append(f'<span class="rtl-state" data-state="{escape(str(state))}">'
                     f"{escape(str(state))}</span>")
    conns = info.get("connections")
    if conns is not None:
        parts.append(f"{int(conns)} conn")
    if meta:
        text = ", ".join(f"{k}={v}" for k, v in sorted(meta.items(), key=lambda kv: str(kv[0])))
        parts.append(f'<span class="rtl-meta">{escape(text[:120])}</span>')
    return " ".join(parts)


def presence_html(channels: Iterable[dict[str, Any]],
                  presence: Callable[[str], dict[str, dict[str, Any]]], *,
                  channel: str | None = None, default_state: str | None = None,
                  limit: int = 30) -> str:
    """The roster: members of each presence channel (or one), with state and metadata,
    and how many members are in each state; a channel in counts mode shows its count
    only (docs/presence.md, "Presence modes": no member list is read)."""
    blocks = []
    for ch in sorted(channels, key=lambda c: str(c["name"])):
        name_raw = str(ch["name"])
        if not ch.get("presence") or (channel is not None and name_raw != channel):
            continue
        if ch.get("presence_mode") == "counts":
            blocks.append(f'<div class="rtl-presence-channel rtl-presence-counts" '
                          f'data-channel="{escape(name_raw)}"><b>{escape(name_raw)}</b> '
                          f'(<span class="rtl-count">{int(ch.get("members") or 0)}</span> '
                          f"members, counts mode)</div>")
            continue
        members = presence(name_raw)
        states: dict[str, int] = {}
        for info in members.values():
            st = str(info.get("state") or default_state or "")
            states[st] = states.get(st, 0) + 1
        summary = ", ".join(f"{n} {escape(st)}" for st, n in sorted(states.items()) if st)
        name = escape(name_raw)
        items = [f'<li class="rtl-member" data-user="{escape(user)}" data-channel="{name}">'
                 f"{escape(user)} {_info_html(dict(info), default_state)}</li>"
                 for user, info in sorted(members.items())[:limit]]
        if len(members) > limit:
            items.append(f"<li>... and {len(members) - limit} more</li>")
        blocks.append(f'<div class="rtl-presence-channel" data-channel="{name}">'
                      f"<b>{name}</b> ({len(members)} members{': ' + summary if summary else ''})"
                      f"<ul class=\"rtl-roster\">{''.join(items)}</ul></div>")
    if not blocks:
        blocks.append('<div class="rtl-empty">nobody here yet</div>')
    return f"{STYLE}<div class=\"rtl-caption\">Presence</div>{''.join(blocks)}"


def metrics_values(snap: ServerSnapshot, rates: Rates, now: float,
                   rss_bytes: int | None = None) -> dict[str, str]:
    """The live metrics, formatted: connections, channels, rates, totals, memory."""
    c = snap.counters
    values = {
        "connections": str(snap.connection_count),
        "channels": str(snap.channel_count),
        "publishes_per_s": f"{rates.rate('published', c['published'], now):.1f}",
        "deliveries_per_s": f"{rates.rate('deliveries', c['deliveries'], now):.1f}",
        "published": str(c["published"]),
        "deliveries": str(c["deliveries"]),
        "slow_consumers": str(c["slow_consumers"]),
        "heartbeat_timeouts": str(c["heartbeat_timeouts"]),
    }
    if snap.queued_bytes is not None:
        values["queued_kib"] = f"{snap.queued_bytes / 1024:.1f}"
    if rss_bytes is not None:
        values["rss_mib"] = f"{rss_bytes / 2**20:.1f}"
    return values


LABELS = {"publishes_per_s": "publishes/s", "deliveries_per_s": "deliveries/s",
          "rss_mib": "RSS MiB", "queued_kib": "queued KiB"}


def metrics_html(values: dict[str, str]) -> str:
    cells = "".join(f'<span class="rtl-metric" data-metric="{k}">'
                    f'{LABELS.get(k, k.replace("_", " "))}: '
                    f"<b>{escape(v)}</b></span>" for k, v in values.items())
    return f"{STYLE}<div class=\"rtl-caption\">Live metrics</div><div>{cells}</div>"


def connections_html(snap: ServerSnapshot, *, limit: int = 12) -> str:
    """Per connection (the fullest queues first): user, channels, RTT, queued bytes."""
    rows = []
    for c in snap.connections[:limit]:
        rtt = "" if c.rtt_ms is None else f"{c.rtt_ms:.1f}"
        chans = ", ".join(c.channels)
        fill = min(1.0, c.queue_fill)
        bar = f'<span class="rtl-fill" style="width:{round(40 * fill)}px"></span>' if fill else ""
        rows.append(
            f'<tr class="rtl-connection" data-user="{escape(c.user)}" '
            f'data-session="{escape(c.session)}"><td>{escape(c.user)}</td>'
            f"<td>{escape(chans[:60])}</td><td>{rtt}</td>"
            f'<td class="rtl-queued">{c.queued_bytes}</td><td>{bar} {fill:.0%}</td>'
            f"<td>{c.messages_in}</td><td>{c.messages_out}</td><td>{escape(c.wire)}</td></tr>")
    more = snap.connection_count - len(rows)
    if more > 0:
        rows.append(f'<tr><td colspan="8">... and {more} more connections</td></tr>')
    if not snap.connection_count:
        rows.append('<tr class="rtl-empty"><td colspan="8">no connections</td></tr>')
    return (f'{STYLE}<table class="rtl-table rtl-connections-table"><caption>Connections '
            f"({snap.connection_count}; fullest queues first)</caption><tr><th>user</th>"
            "<th>channels</th><th>RTT ms</th><th>queued B</th><th>of limit</th><th>in</th>"
            f"<th>out</th><th>wire</th></tr>{''.join(rows)}</table>")


def events_html(rows: Iterable[LogRow], t0: float, *, limit: int = 14) -> str:
    """The event log, newest first: time, kind, user, channel, reason."""
    recent = list(rows)[-limit:][::-1]
    lines = [f'<tr class="rtl-event" data-kind="{escape(r.kind)}"><td>{r.at - t0:.1f}</td>'
             f"<td>{escape(r.kind)}{f' ×{r.count}' if r.count > 1 else ''}</td>"
             f"<td>{escape(r.user[:24])}</td><td>{escape(r.channel[:24])}</td>"
             f"<td>{escape(r.detail[:60])}</td></tr>" for r in recent]
    if not lines:
        lines.append('<tr class="rtl-empty"><td colspan="5">no events yet</td></tr>')
    return (f'{STYLE}<table class="rtl-table rtl-events-table"><caption>Event log (newest '
            "first)</caption><tr><th>t (s)</th><th>event</th><th>user</th><th>channel</th>"
            f"<th>reason</th></tr>{''.join(lines)}</table>")


def charts_html(series: LiveSeries, now: float, *, recording: bool) -> str:
    """The six live charts of the dashboard."""
    p = series.points
    w = series.window
    red, green, orange = PALETTE[1], PALETTE[2], PALETTE[3]
    charts = [
        line_chart("throughput", "Throughput", "messages/s",
                   [Series("deliveries/s", p("deliveries_per_s")),
                    Series("publishes/s", p("publishes_per_s"), orange)], now=now, window=w),
        line_chart("latency", "Delivery latency", "ms",
                   [Series("p50", p("latency_p50_ms")), Series("p90", p("latency_p90_ms"), orange),
                    Series("p99", p("latency_p99_ms"), red)], now=now, window=w,
                   note="" if recording else "not recording: server.record()"),
        line_chart("connections", "Connections", "connections",
                   [Series("open", p("connections"))], now=now, window=w),
        line_chart("memory", "Memory per connection (process RSS)", "KiB / connection",
                   [Series("RSS growth / connections added", p("kib_per_connection"), green)],
                   now=now, window=w, note="no new connections yet"),
        line_chart("queues", "Outbound queues", "KiB queued",
                   [Series("all connections", p("queued_kib"))], now=now, window=w),
        line_chart("slow", "Slow consumers, heartbeat timeouts", "connections",
                   [Series("slow closes", p("slow_consumers"), red),
                    Series("hb timeouts", p("heartbeat_timeouts"), orange),
                    Series("queue > 50%", p("at_risk"))], now=now, window=w),
    ]
    return f'{STYLE}<div class="rtl-charts">{"".join(charts)}</div>'

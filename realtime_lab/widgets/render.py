"""HTML for the widget views, from a hub's state (pure functions, no ipywidgets).

Every name that comes from a client (user ids, channel names, presence
metadata) is escaped. Elements carry CSS classes and ``data-*`` attributes so
tests and stylesheets can find them (docs/widgets.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub

STYLE = (
    "<style>"
    ".rtl-table{border-collapse:collapse;font-family:monospace;font-size:12px}"
    ".rtl-table th,.rtl-table td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    ".rtl-table th:first-child,.rtl-table td:first-child{text-align:left}"
    ".rtl-member{font-family:monospace;font-size:12px}"
    ".rtl-state{padding:0 4px;border-radius:3px;background:#e0f0e0}"
    ".rtl-metric{display:inline-block;min-width:9em;margin:2px 8px 2px 0;font-family:monospace}"
    ".rtl-metric b{font-size:14px}"
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


def channels_html(hub: Hub, rates: Rates, now: float, *, limit: int = 50) -> str:
    """A table: channel, subscribers, presence members, messages, messages per second."""
    channels = sorted(hub.channels.values(), key=lambda c: c.name)
    rows = []
    for ch in channels[:limit]:
        rate = rates.rate("ch:" + ch.name, ch.messages, now)
        name = escape(ch.name)
        rows.append(
            f'<tr class="rtl-channel-row" data-channel="{name}"><td>{name}</td>'
            f'<td class="rtl-subscribers">{len(ch.subscribers)}</td>'
            f"<td>{len(ch.members)}</td><td>{ch.messages}</td><td>{rate:.1f}</td></tr>")
    more = len(channels) - limit
    if more > 0:
        rows.append(f'<tr><td colspan="5">... and {more} more channels</td></tr>')
    if not rows:
        rows.append('<tr class="rtl-empty"><td colspan="5">no channels yet</td></tr>')
    return (f'{STYLE}<table class="rtl-table"><caption>Channels ({len(channels)})</caption>'
            "<tr><th>channel</th><th>subscribers</th><th>members</th><th>messages</th>"
            f"<th>msg/s</th></tr>{''.join(rows)}</table>")


def _info_html(info: dict[str, Any]) -> str:
    """State, connection count and metadata of one member (``meta`` dict flattened)."""
    raw_meta = info.get("meta")
    meta = dict(raw_meta) if isinstance(raw_meta, dict) else {}
    meta.update({k: v for k, v in info.items() if k not in ("state", "connections", "meta")})
    state = info.get("state", meta.pop("state", None))
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


def presence_html(hub: Hub, *, channel: str | None = None, limit: int = 30) -> str:
    """Members of each presence channel (or one), with state and metadata."""
    blocks = []
    for ch in sorted(hub.channels.values(), key=lambda c: c.name):
        if not ch.presence or (channel is not None and ch.name != channel):
            continue
        members = ch.presence_members()
        name = escape(ch.name)
        items = [f'<li class="rtl-member" data-user="{escape(user)}" data-channel="{name}">'
                 f"{escape(user)} {_info_html(dict(info))}</li>"
                 for user, info in sorted(members.items())[:limit]]
        if len(members) > limit:
            items.append(f"<li>... and {len(members) - limit} more</li>")
        blocks.append(f'<div class="rtl-presence-channel" data-channel="{name}">'
                      f"<b>{name}</b> ({len(members)} members)<ul>{''.join(items)}</ul></div>")
    if not blocks:
        blocks.append('<div class="rtl-empty">nobody here yet</div>')
    return f"{STYLE}<div><b>Presence</b></div>{''.join(blocks)}"


def metrics_values(hub: Hub, rates: Rates, now: float,
                   rss_bytes: int | None = None) -> dict[str, str]:
    """The live metrics, formatted: connections, channels, rates, totals, memory."""
    stats = hub.stats
    values = {
        "connections": str(len(hub.sessions)),
        "channels": str(len(hub.channels)),
        "publishes_per_s": f"{rates.rate('published', stats.published, now):.1f}",
        "deliveries_per_s": f"{rates.rate('deliveries', stats.deliveries, now):.1f}",
        "published": str(stats.published),
        "deliveries": str(stats.deliveries),
        "slow_consumers": str(stats.slow_consumers),
        "heartbeat_timeouts": str(stats.heartbeat_timeouts),
    }
    if rss_bytes is not None:
        values["rss_mib"] = f"{rss_bytes / 2**20:.1f}"
    return values


LABELS = {"publishes_per_s": "publishes/s", "deliveries_per_s": "deliveries/s",
          "rss_mib": "RSS MiB"}


def metrics_html(values: dict[str, str]) -> str:
    cells = "".join(f'<span class="rtl-metric" data-metric="{k}">'
                    f'{LABELS.get(k, k.replace("_", " "))}: '
                    f"<b>{escape(v)}</b></span>" for k, v in values.items())
    return f"{STYLE}<div><b>Live metrics</b></div><div>{cells}</div>"

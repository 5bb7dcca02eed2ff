"""ipywidgets views of a running server: channels, presence, metrics, charts, a dashboard.

Each view is an ``ipywidgets.HTML`` whose ``value`` is re-rendered by
:meth:`refresh` and sent to the front end only when it changed. A
:class:`Dashboard` refreshes its views from a task on the running event loop
(the kernel's, in a notebook) every ``interval`` seconds, so updates keep coming
while no cell runs and never more often than ``1 / MIN_INTERVAL`` per second.
When nothing changed since the last refresh (same counters, no event, empty
queues) a refresh reads the counters and stops there: no rendering, nothing sent.
Views read the server only through its public API (:mod:`.source`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from realtime_lab.errors import require
from realtime_lab.instrument.memory import rss_bytes
from realtime_lab.widgets import render
from realtime_lab.widgets.live import LOGGED_TYPES, EventLog, LiveSeries
from realtime_lab.widgets.source import Source

if TYPE_CHECKING:
    from realtime_lab.inspection import ServerSnapshot
    from realtime_lab.widgets.controls import Controls

widgets: Any = require("ipywidgets", "notebook")

MIN_INTERVAL = 0.25
"""Shortest refresh interval of the views, in seconds (at most 4 updates per second)."""
DEFAULT_INTERVAL = 1.0
"""Default refresh interval, in seconds; the dashboard's cost is measured at it."""
TOP_CONNECTIONS = 12  # rows of the per-connection view
STOP_AFTER = 3.0  # seconds a server must stay stopped before the refresh task ends


class _LiveHTML(widgets.HTML):  # type: ignore[misc]
    css_class = "rtl-view"

    def __init__(self, source: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.src = source if isinstance(source, Source) else Source(source)
        self.rates = render.Rates()
        self.updates = 0
        self.add_class("rtl-view")
        self.add_class(self.css_class)
        self.refresh()

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Close the widget and stop listening to the server's events (if it did)."""
        subscription = getattr(self, "subscription", None)
        if subscription is not None:
            subscription.cancel()
        super().close()

    def refresh(self, now: float | None = None, snap: ServerSnapshot | None = None) -> bool:
        """Re-render; send to the front end only when the HTML changed. True if sent."""
        html = self.render(time.monotonic() if now is None else now, snap)
        if html == getattr(self, "value", None):
            return False
        self.value = html
        self.updates += 1
        return True


class ChannelsView(_LiveHTML):
    """Channels with subscribers, presence members, messages and message rate."""

    css_class = "rtl-channels"

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        return render.channels_html(self.src.channels(), self.rates, now)


class PresenceView(_LiveHTML):
    """The roster: members of each presence channel (or of ``channel``), with states.

    Reading presence costs one entry per member, so the roster is read again only
    when presence changed (a ``presence.*`` event, a channel appeared or went away)
    or ``reread`` seconds passed (members of other nodes, with a broker).
    """

    css_class = "rtl-presence"

    def __init__(self, source: Any, *, channel: str | None = None, reread: float = 5.0,
                 **kwargs: Any) -> None:
        self.channel = channel
        self.reread = reread
        self.changes = 0
        src = source if isinstance(source, Source) else Source(source)
        self.subscription = src.on(("presence.*", "channel.occupied", "channel.vacated"),
                                   self._changed)
        self._seen: tuple[int, float] | None = None
        self._html = ""
        super().__init__(src, **kwargs)

    def _changed(self, _event: object) -> None:
        self.changes += 1

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        if self._seen is not None and self._seen[0] == self.changes \
                and now - self._seen[1] < self.reread:
            return self._html
        self._seen = (self.changes, now)
        self._html = render.presence_html(self.src.channels(), self.src.presence,
                                          channel=self.channel,
                                          default_state=self.src.default_state)
        return self._html


class MetricsView(_LiveHTML):
    """Connections, channels, publish and delivery rates, totals, queues, process RSS."""

    css_class = "rtl-metrics"

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        snap = snap or self.src.inspect(connections=0)
        return render.metrics_html(render.metrics_values(snap, self.rates, now, self.rss))

    @property
    def rss(self) -> int:
        return rss_bytes()


class ConnectionsView(_LiveHTML):
    """Per connection, fullest queues first: user, channels, RTT, queued bytes, counts."""

    css_class = "rtl-connections"

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        return render.connections_html(snap or self.src.inspect(connections=TOP_CONNECTIONS))


class EventsView(_LiveHTML):
    """The latest joins, leaves, reconnects, refusals and timeouts, with reasons."""

    css_class = "rtl-events"

    def __init__(self, source: Any, *, size: int = 200, **kwargs: Any) -> None:
        self.event_log = EventLog(size)
        self.t0 = time.monotonic()
        src = source if isinstance(source, Source) else Source(source)
        self.subscription = src.on(LOGGED_TYPES, self.event_log)
        super().__init__(src, **kwargs)

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        return render.events_html(self.event_log.rows, self.t0)


class ChartsView(_LiveHTML):
    """Throughput, latency percentiles, connections, memory per connection, queues and
    slow consumers over the last ``window`` seconds (SVG, see :mod:`.charts`)."""

    css_class = "rtl-charts-view"

    def __init__(self, source: Any, *, window: float = 60.0, **kwargs: Any) -> None:
        self.series = LiveSeries(window=window)
        self.latency_mark = 0
        self.recording = False
        super().__init__(source, **kwargs)

    def sample(self, snap: ServerSnapshot) -> None:
        """Add one point per chart from ``snap`` (and the recorder's new latencies)."""
        rec = snap.recorder
        latencies: list[float] = []
        self.recording = rec is not None and hasattr(rec, "latencies_since")
        if self.recording:
            self.latency_mark, latencies = rec.latencies_since(  # type: ignore[union-attr]
                self.latency_mark)
        self.series.add(snap, rss_bytes(), latencies)

    def render(self, now: float, snap: ServerSnapshot | None = None) -> str:
        last = self.series.last
        return render.charts_html(self.series, last.t if last else now,
                                  recording=self.recording)


class Dashboard(widgets.VBox):  # type: ignore[misc]
    """Live charts, channels, presence roster, connections and event log of a server,
    with experiment controls; refreshed from the event loop.

    Args:
        source: a LabServer (or a Hub: no controls then).
        interval: seconds between refreshes (at least ``MIN_INTERVAL``).
        window: seconds of history in the charts.
        controls: show the experiment controls (:class:`.controls.Controls`).
        autostart: start the refresh task when an event loop is running.
    """

    def __init__(self, source: Any, *, interval: float = DEFAULT_INTERVAL, window: float = 60.0,
                 controls: bool = True, autostart: bool = True) -> None:
        self.source = source
        self.src = Source(source)
        self.interval = max(MIN_INTERVAL, float(interval))
        self.metrics = MetricsView(self.src)
        self.charts = ChartsView(self.src, window=window)
        self.channels = ChannelsView(self.src)
        self.presence = PresenceView(self.src)
        self.connections = ConnectionsView(self.src)
        self.events = EventsView(self.src)
        self.controls: Controls | None = None
        self.refreshes = 0
        self.skipped = 0
        self._token: tuple[Any, ...] | None = None
        title = widgets.HTML(self._title_html())
        title.add_class("rtl-title")
        parts = [title, self.metrics]
        if controls and self.src.is_server:
            from realtime_lab.widgets.controls import Controls

            self.controls = Controls(source)
            parts.append(self.controls)
        parts += [self.charts, widgets.HBox([self.channels, self.presence]),
                  widgets.HBox([self.connections, self.events])]
        super().__init__(parts)
        self.add_class("rtl-dashboard")
        self._task: asyncio.Task[None] | None = None
        self.refresh()
        if autostart:
            self.start()

    def _title_html(self) -> str:
        return (f'<span style="font-size:16px"><b>realtime_lab</b> '
                f"{self.src.url}</span>")

    @property
    def views(self) -> tuple[_LiveHTML, ...]:
        return (self.metrics, self.charts, self.channels, self.presence, self.connections,
                self.events)

    def refresh(self) -> int:
        """Refresh now; return how many views changed (0 when nothing happened)."""
        quick = self.src.inspect(connections=False)
        token = (tuple(quick.counters.values()), quick.connection_count, quick.channel_count,
                 self.events.event_log.version, quick.recorder is not None)
        if token == self._token and self.charts.series.quiet():
            self.skipped += 1
            return 0
        self._token = token
        snap = self.src.inspect(connections=TOP_CONNECTIONS)
        self.charts.sample(snap)
        self.refreshes += 1
        if self.controls is not None:
            self.controls.update_status()
        now = snap.at
        return sum(view.refresh(now, snap) for view in self.views)

    def html(self) -> str:
        """The dashboard as one static HTML page fragment (charts included, no controls)."""
        body = "".join(f'<div class="{" ".join(v._dom_classes)}">{v.value}</div>'
                       for v in (self.metrics, self.charts))
        row = ('<div style="display:flex;gap:16px;align-items:flex-start">'
               '<div class="{}">{}</div><div class="{}">{}</div></div>')
        body += row.format("rtl-channels", self.channels.value, "rtl-presence",
                           self.presence.value)
        body += row.format("rtl-connections", self.connections.value, "rtl-events",
                           self.events.value)
        return f'<div class="rtl-dashboard rtl-static">{self._title_html()}{body}</div>'

    def snapshot(self) -> StaticPicture:
        """A still picture of the dashboard now: shows in the notebook, and is what a
        viewer without a kernel (nbconvert, GitHub, a docs site) sees of this moment."""
        self.refresh()
        return StaticPicture(self.html())

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The live widget, plus a static ``text/html`` picture for renderers without a
        kernel (JupyterLab and Voilà show the widget)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/html"] = self.html()
        return bundle

    def start(self) -> bool:
        """Start refreshing on the running loop; False when no loop is running."""
        if self._task is not None and not self._task.done():
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._task = loop.create_task(self._run())
        return True

    def stop(self) -> None:
        """Stop refreshing (the views keep their last content)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def close(self) -> None:
        """Stop refreshing, stop listening to the server's events, close the widgets.
        (Simulated clients keep running: ``await dash.controls.aclose()`` stops them.)"""
        self.stop()
        for view in getattr(self, "views", ()):
            view.close()
        super().close()

    async def _run(self) -> None:
        stopped_since: float | None = None
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.interval)
                self.refresh()
                if self.src.running:
                    stopped_since = None
                    continue
                now = time.monotonic()
                stopped_since = stopped_since or now
                if now - stopped_since >= STOP_AFTER:  # stopped, not restarting
                    return  # keep the last picture


class StaticPicture:
    """HTML that displays as itself (``_repr_html_``): a dashboard snapshot."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<StaticPicture {len(self.html)} characters of HTML>"

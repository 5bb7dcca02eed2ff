"""ipywidgets views of a running server: channels, presence, live metrics, a dashboard.

Each view is an ``ipywidgets.HTML`` whose ``value`` is re-rendered by
:meth:`refresh` and sent to the front end only when it changed. A
:class:`Dashboard` refreshes its views from a task on the running event loop
(the kernel's, in a notebook) every ``interval`` seconds, so updates keep coming
while no cell runs and never more often than ``1 / MIN_INTERVAL`` per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from realtime_lab.errors import require
from realtime_lab.instrument.memory import rss_bytes
from realtime_lab.widgets import render

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub

widgets: Any = require("ipywidgets", "notebook")

MIN_INTERVAL = 0.25  # seconds: at most 4 updates per second
DEFAULT_INTERVAL = 0.5


def _hub(source: Any) -> Hub:
    """A LabServer or a Hub -> the Hub."""
    return source.hub if hasattr(source, "hub") else source


class _LiveHTML(widgets.HTML):  # type: ignore[misc]
    css_class = "rtl-view"

    def __init__(self, source: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.hub = _hub(source)
        self.rates = render.Rates()
        self.updates = 0
        self.add_class("rtl-view")
        self.add_class(self.css_class)
        self.refresh()

    def render(self, now: float) -> str:
        raise NotImplementedError

    def refresh(self, now: float | None = None) -> bool:
        """Re-render; send to the front end only when the HTML changed. True if sent."""
        html = self.render(time.monotonic() if now is None else now)
        if html == getattr(self, "value", None):
            return False
        self.value = html
        self.updates += 1
        return True


class ChannelsView(_LiveHTML):
    """Channels with subscribers, presence members, messages and message rate."""

    css_class = "rtl-channels"

    def render(self, now: float) -> str:
        return render.channels_html(self.hub, self.rates, now)


class PresenceView(_LiveHTML):
    """Presence members of each channel (or of ``channel``) with state and metadata."""

    css_class = "rtl-presence"

    def __init__(self, source: Any, *, channel: str | None = None, **kwargs: Any) -> None:
        self.channel = channel
        super().__init__(source, **kwargs)

    def render(self, now: float) -> str:
        return render.presence_html(self.hub, channel=self.channel)


class MetricsView(_LiveHTML):
    """Connections, channels, publish and delivery rates, totals, process RSS."""

    css_class = "rtl-metrics"

    def render(self, now: float) -> str:
        return render.metrics_html(render.metrics_values(self.hub, self.rates, now, rss_bytes()))


class Dashboard(widgets.VBox):  # type: ignore[misc]
    """Channels, presence and live metrics of a server, refreshed from the event loop.

    Args:
        source: a LabServer (or a Hub).
        interval: seconds between refreshes (at least ``MIN_INTERVAL``).
        autostart: start the refresh task when an event loop is running.
    """

    def __init__(self, source: Any, *, interval: float = DEFAULT_INTERVAL,
                 autostart: bool = True) -> None:
        self.source = source
        self.interval = max(MIN_INTERVAL, float(interval))
        self.channels = ChannelsView(source)
        self.presence = PresenceView(source)
        self.metrics = MetricsView(source)
        url = getattr(source, "url", None) if getattr(source, "_port", 1) is not None else None
        title = widgets.HTML(f"<b>realtime_lab</b> {url or ''}")
        title.add_class("rtl-title")
        super().__init__([title, self.metrics,
                          widgets.HBox([self.channels, self.presence])])
        self.add_class("rtl-dashboard")
        self._task: asyncio.Task[None] | None = None
        if autostart:
            self.start()

    @property
    def views(self) -> tuple[_LiveHTML, ...]:
        return (self.channels, self.presence, self.metrics)

    def refresh(self) -> int:
        """Refresh every view now; return how many changed."""
        now = time.monotonic()
        return sum(view.refresh(now) for view in self.views)

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

    async def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.interval)
                self.refresh()
                if getattr(self.source, "running", True) is False:
                    return  # the server stopped: keep the last picture

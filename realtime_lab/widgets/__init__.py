"""ipywidgets views of a running server (needs ``pip install 'realtime_lab[notebook]'``).

``server.dashboard()`` shows live charts, channels, the presence roster, the
connections and an event log, with experiment controls, refreshed from the
kernel's event loop a few times a second at most. docs/widgets.md has the
details and the CSS classes.
"""

from realtime_lab.errors import require

require("ipywidgets", "notebook")

from realtime_lab.widgets.controls import Controls  # noqa: E402
from realtime_lab.widgets.views import (  # noqa: E402
    DEFAULT_INTERVAL,
    MIN_INTERVAL,
    ChannelsView,
    ChartsView,
    ConnectionsView,
    Dashboard,
    EventsView,
    MetricsView,
    PresenceView,
    StaticPicture,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "MIN_INTERVAL",
    "ChannelsView",
    "ChartsView",
    "ConnectionsView",
    "Controls",
    "Dashboard",
    "EventsView",
    "MetricsView",
    "PresenceView",
    "StaticPicture",
]

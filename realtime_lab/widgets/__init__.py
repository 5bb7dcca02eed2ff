"""ipywidgets views of a running server (needs ``pip install 'realtime_lab[notebook]'``).

``server.dashboard()`` shows channels, presence and live metrics, refreshed from
the kernel's event loop a few times a second at most. docs/widgets.md has the
details and the CSS classes.
"""

from realtime_lab.errors import require

require("ipywidgets", "notebook")

from realtime_lab.widgets.views import (  # noqa: E402
    DEFAULT_INTERVAL,
    MIN_INTERVAL,
    ChannelsView,
    Dashboard,
    MetricsView,
    PresenceView,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "MIN_INTERVAL",
    "ChannelsView",
    "Dashboard",
    "MetricsView",
    "PresenceView",
]

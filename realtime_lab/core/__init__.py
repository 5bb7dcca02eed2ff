"""The core: a hub of sessions and channels that knows nothing of sockets."""

from realtime_lab.core.channels import Channel, validate_channel
from realtime_lab.core.hub import Hub
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.ports import ConnectionPort
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.core.stats import HubStats

__all__ = [
    "Channel",
    "ConnectionPort",
    "ConnectionState",
    "Hub",
    "HubStats",
    "ServerOptions",
    "Session",
    "validate_channel",
]

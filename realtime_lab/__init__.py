"""realtime_lab: a realtime WebSocket server library on Tornado, and a lab in a notebook."""

from realtime_lab._version import __version__
from realtime_lab.client import Client, connect
from realtime_lab.core import ConnectionState, Hub, ServerOptions
from realtime_lab.core.authz import ChannelRule, sign_channel_token, verify_channel_token
from realtime_lab.core.history import HistoryRule
from realtime_lab.errors import (
    ConnectionClosed,
    PortInUseError,
    ProtocolError,
    RealtimeLabError,
    RequestFailed,
)
from realtime_lab.protocol import CloseCode, ReconnectAdvice, advice_for
from realtime_lab.server import LabServer, serve

__all__ = [
    "ChannelRule",
    "Client",
    "CloseCode",
    "ConnectionClosed",
    "ConnectionState",
    "HistoryRule",
    "Hub",
    "LabServer",
    "PortInUseError",
    "ProtocolError",
    "RealtimeLabError",
    "ReconnectAdvice",
    "RequestFailed",
    "ServerOptions",
    "__version__",
    "advice_for",
    "connect",
    "serve",
    "sign_channel_token",
    "verify_channel_token",
]

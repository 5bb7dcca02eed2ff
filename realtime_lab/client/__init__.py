"""The Python client (asyncio, usable with top-level await in a notebook)."""

from realtime_lab.client.backoff import Backoff, Jitter
from realtime_lab.client.client import Client, SendBufferFull, connect
from realtime_lab.client.options import ClientOptions
from realtime_lab.client.presence import PresenceView
from realtime_lab.client.states import ClientState, StateChange

__all__ = [
    "Backoff",
    "Client",
    "ClientOptions",
    "ClientState",
    "Jitter",
    "PresenceView",
    "SendBufferFull",
    "StateChange",
    "connect",
]

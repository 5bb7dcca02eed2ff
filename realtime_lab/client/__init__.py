"""The Python client (asyncio, usable with top-level await in a notebook)."""

from realtime_lab.client.client import Client, ClientState, connect

__all__ = ["Client", "ClientState", "connect"]

"""Transports: thin adapters that move bytes between sockets and the core hub."""

from realtime_lab.transports.tornado_ws import HubWebSocketHandler, TornadoPort

__all__ = ["HubWebSocketHandler", "TornadoPort"]

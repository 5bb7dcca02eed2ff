"""Transports: thin adapters that move bytes between sockets and the core hub.

``tornado_ws.py`` takes a WebSocket upgrade out of Tornado's HTTP server;
``pump.py`` drives the sans-I/O connection (``realtime_lab.protocol.connection``)
on the socket and is the hub's ``ConnectionPort``.
"""

from realtime_lab.transports.pump import Pump, SocketPump, StreamPump
from realtime_lab.transports.tornado_ws import EchoHandler, HubWebSocketHandler

__all__ = ["EchoHandler", "HubWebSocketHandler", "Pump", "SocketPump", "StreamPump"]

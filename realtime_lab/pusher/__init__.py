"""The Pusher Channels protocol (version 7) on the hub: docs/pusher.md.

pusher-js, Laravel Echo and the Pusher HTTP server SDKs work with a realtime_lab
server unchanged: ``serve(pusher_apps=["APP_ID:KEY:SECRET"])`` (or
``realtime-lab serve --pusher-app APP_ID:KEY:SECRET``). Pusher clients connect at
``/app/{key}`` and share the hub's channels, presence, hooks, limits and metrics
with native clients; the server SDKs call ``/apps/{app_id}/...``.
"""

from realtime_lab.pusher.apps import PusherApp, PusherApps
from realtime_lab.pusher.auth import authenticate, channel_auth
from realtime_lab.pusher.protocol import session_id_of, socket_id_of

__all__ = ["PusherApp", "PusherApps", "authenticate", "channel_auth", "session_id_of",
           "socket_id_of"]

"""The Pusher side of a server: its routes, its webhooks, its checks (``LabServer``).

:class:`PusherAdapter` is made by ``LabServer`` when ``ServerOptions.pusher_apps``
is not empty. It checks that the hub's channel rules give ``private-`` and
``presence-`` channels the meaning Pusher clients expect, gives the Tornado
application its routes, and runs the webhooks while the server runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from realtime_lab.pusher.apps import PusherApps

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub
    from realtime_lab.pusher.webhooks import Webhooks


class PusherAdapter:
    """The Pusher protocol on one hub: routes for ``/app/{key}``, ``/apps/{id}/...``,
    ``/pusher/auth`` and ``/pusher/user-auth``, and the webhooks."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        options = hub.options
        apps = PusherApps(options.pusher_apps)
        if options.pusher_webhooks:  # every app's webhooks go there too
            apps = PusherApps(dataclasses.replace(a, webhooks=(*a.webhooks,
                                                               *options.pusher_webhooks))
                              for a in apps)
        self.apps = apps
        registry = hub.services.registry
        if registry.rule("private-x").policy != "private" \
                or registry.rule("presence-x").policy != "presence":
            raise ValueError("with pusher_apps, the channel rules must keep private-* private "
                             "and presence-* presence (ServerOptions.channel_rules)")
        if not registry.has_presence("presence-x"):
            raise ValueError("with pusher_apps, presence_channels must match presence-* "
                             "channels (ServerOptions.presence_channels)")
        self.webhooks: Webhooks | None = None
        if any(app.webhooks for app in self.apps):
            from realtime_lab.pusher.webhooks import Webhooks

            self.webhooks = Webhooks(hub, self.apps)

    def routes(self, started_at: float) -> list[tuple[str, Any, dict[str, Any]]]:
        """The Tornado rules of the Pusher endpoints."""
        from realtime_lab.pusher.http_api import (
            AuthHandler,
            ChannelHandler,
            ChannelsHandler,
            ChannelUsersHandler,
            EventsHandler,
            TerminateHandler,
            UserAuthHandler,
        )
        from realtime_lab.pusher.socket import PusherSocketHandler

        hub, apps = self.hub, self.apps
        api = {"hub": hub, "apps": apps, "webhooks": self.webhooks}
        rules: list[tuple[str, Any, dict[str, Any]]] = [
            (r"/app/([^/]*)", PusherSocketHandler,
             {"hub": hub, "apps": apps, "webhooks": self.webhooks}),
            (r"/apps/([^/]+)/(events|batch_events)", EventsHandler, api),
            (r"/apps/([^/]+)/channels", ChannelsHandler, api),
            (r"/apps/([^/]+)/channels/([^/]+)/users", ChannelUsersHandler, api),
            (r"/apps/([^/]+)/channels/([^/]+)", ChannelHandler, api),
            (r"/apps/([^/]+)/users/([^/]+)/terminate_connections", TerminateHandler, api),
            (r"/users/([^/]+)/terminate_connections", TerminateHandler, api),
        ]
        if hub.options.pusher_auth is not None:
            rules.append((r"/pusher/auth", AuthHandler,
                          {"apps": apps, "authorize": hub.options.pusher_auth}))
        if hub.options.pusher_user_auth is not None:
            rules.append((r"/pusher/user-auth", UserAuthHandler,
                          {"apps": apps, "authorize": hub.options.pusher_user_auth}))
        return rules

    def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()


__all__ = ["PusherAdapter"]

"""Pusher webhooks: channel and member events, batched, signed, retried, never blocking.

The hub's events (``channel.occupied``, ``channel.vacated``, ``presence.join``,
``presence.leave``, ``presence.timeout``) and the client events the adapter
forwards become Pusher webhook events. Each app collects them for ``batch_delay``
seconds, then POSTs ``{"time_ms": ..., "events": [...]}`` to each of its URLs, with
``X-Pusher-Key`` and ``X-Pusher-Signature`` (HMAC-SHA256 of the body with the
app's secret). Delivery runs in tasks on the event loop with Tornado's
non-blocking HTTP client: a slow or dead receiver never holds up the hub. A
failed POST (no answer within ``timeout``, or a status other than 2xx) is tried
again after 1, 2, 4... seconds, ``attempts`` times in all; then it is dropped and
counted. At most ``max_pending`` events wait per app: more drop the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime_lab.core import events as ev
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.pusher.apps import PusherApp, PusherApps
from realtime_lab.pusher.auth import webhook_headers
from realtime_lab.pusher.protocol import is_presence

if TYPE_CHECKING:
    from realtime_lab.core.events import Event, Subscription
    from realtime_lab.core.hub import Hub

log = logging.getLogger("realtime_lab.pusher")

HUB_EVENTS = ("channel.occupied", "channel.vacated", "presence.join", "presence.leave",
              "presence.timeout")


@dataclass
class WebhookStats:
    """Counters: batches delivered, tries that failed, batches given up, events dropped."""

    delivered: int = 0
    failed_tries: int = 0
    given_up: int = 0
    dropped_events: int = 0


class Webhooks:
    """Sends every app's webhooks (one per app with ``webhooks`` URLs)."""

    def __init__(self, hub: Hub, apps: PusherApps, *, batch_delay: float = 0.25,
                 attempts: int = 5, first_retry: float = 1.0, timeout: float = 10.0,
                 max_pending: int = 10_000) -> None:
        self.hub = hub
        self.apps = [app for app in apps if app.webhooks]
        self.batch_delay = batch_delay
        self.attempts = attempts
        self.first_retry = first_retry
        self.timeout = timeout
        self.max_pending = max_pending
        self.stats = WebhookStats()
        self._pending: dict[str, deque[dict[str, Any]]] = {a.app_id: deque() for a in self.apps}
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self._throttle = LogThrottle(log)

    # ------------------------------------------------------------------ sources

    def start(self) -> None:
        """Listen to the hub's events (``LabServer.start``)."""
        if self._subscription is None and self.apps:
            self._subscription = self.hub.bus.subscribe(self._on_hub_event, HUB_EVENTS)

    def _on_hub_event(self, event: Event) -> None:
        channel = getattr(event, "channel", None)
        if not isinstance(channel, str):
            return
        if isinstance(event, ev.ChannelOccupied):
            item: dict[str, Any] = {"name": "channel_occupied", "channel": channel}
        elif isinstance(event, ev.ChannelVacated):
            item = {"name": "channel_vacated", "channel": channel}
        elif not is_presence(channel):
            return
        elif isinstance(event, ev.PresenceJoin):
            item = {"name": "member_added", "channel": channel, "user_id": event.user}
        else:  # a leave or a timeout
            item = {"name": "member_removed", "channel": channel,
                    "user_id": getattr(event, "user", None)}
        for app in self.apps:
            self._add(app, item)

    def client_event(self, app: PusherApp, channel: str, event: str, data: Any,
                     socket_id: str, user_id: str | None) -> None:
        """A client event a connection of ``app`` sent (the adapter calls it)."""
        if not app.webhooks:
            return
        item = {"name": "client_event", "channel": channel, "event": event,
                "data": data if isinstance(data, str) else json.dumps(data,
                                                                     separators=(",", ":")),
                "socket_id": socket_id}
        if user_id is not None:
            item["user_id"] = user_id
        self._add(app, item)

    def _add(self, app: PusherApp, item: dict[str, Any]) -> None:
        queue = self._pending[app.app_id]
        if len(queue) >= self.max_pending:
            queue.popleft()
            self.stats.dropped_events += 1
            self._throttle.log("webhook_overflow", logging.WARNING,
                               "webhooks of app %s: more than %d events waiting; dropping the "
                               "oldest", app.app_id, self.max_pending)
        queue.append(item)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.batch_delay, self.flush)

    # ------------------------------------------------------------------ delivery

    def flush(self) -> None:
        """Send what is waiting now, one batch per app and URL."""
        self._flush = None
        for app in self.apps:
            queue = self._pending[app.app_id]
            if not queue:
                continue
            events = list(queue)
            queue.clear()
            body = json.dumps({"time_ms": int(time.time() * 1000), "events": events},
                              separators=(",", ":")).encode()
            for url in app.webhooks:
                task = asyncio.ensure_future(self._deliver(app, url, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, app: PusherApp, url: str, body: bytes) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        client = AsyncHTTPClient()
        headers = webhook_headers(app, body)
        delay = self.first_retry
        for attempt in range(1, self.attempts + 1):
            try:
                await client.fetch(url, method="POST", body=body, headers=headers,
                                   request_timeout=self.timeout, follow_redirects=False)
                self.stats.delivered += 1
                return
            except (TimeoutError, HTTPClientError, OSError) as exc:
                self.stats.failed_tries += 1
                self._throttle.log(f"webhook_failed:{url}", logging.WARNING,
                                   "webhook to %s failed (try %d of %d): %s", url, attempt,
                                   self.attempts, exc)
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.stats.given_up += 1

    async def stop(self) -> None:
        """Stop listening, send what is waiting, and wait (at most ``timeout``) for it."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._flush is not None:
            self._flush.cancel()
            self.flush()
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=self.timeout)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


__all__ = ["HUB_EVENTS", "WebhookStats", "Webhooks"]

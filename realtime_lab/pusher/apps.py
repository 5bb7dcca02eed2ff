"""Pusher apps: the credentials (id, key, secret) Pusher clients and SDKs are given.

An app is a set of credentials onto the server's one hub: ``/app/{key}`` admits
WebSocket clients of the app with that key, ``/apps/{app_id}/...`` answers its
server SDK, and the secret signs both. Apps share the hub's channels (a channel
``room`` is the same channel for every app and for native clients).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_PART = re.compile(r"\A[A-Za-z0-9_\-.]{1,128}\Z")


@dataclass(frozen=True, slots=True)
class PusherApp:
    """One Pusher app.

    Attributes:
        app_id: the app id the server SDKs use in ``/apps/{app_id}/...``.
        key: the public key pusher-js connects with (``/app/{key}``).
        secret: signs channel authorizations, API requests and webhooks.
        client_events: whether clients may send ``client-`` events (on private and
            presence channels only).
        client_event_rate: client events one connection may send per second
            (more are refused with ``pusher:error`` 4301).
        webhooks: URLs that receive the app's webhooks (POST, signed).
        max_event_bytes: the largest ``data`` of an event (10 KiB, as Pusher).
    """

    app_id: str
    key: str
    secret: str
    client_events: bool = True
    client_event_rate: float = 10.0
    webhooks: tuple[str, ...] = field(default=())
    max_event_bytes: int = 10 * 1024

    def __post_init__(self) -> None:
        for name in ("app_id", "key", "secret"):
            if _PART.fullmatch(getattr(self, name)) is None:
                raise ValueError(f"the Pusher app's {name} must be 1 to 128 letters, digits, "
                                 "'_', '-' or '.'")
        if not self.client_event_rate > 0:
            raise ValueError("client_event_rate must be > 0")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"a webhook URL must be http:// or https://, not {url!r}")

    @classmethod
    def parse(cls, spec: str) -> PusherApp:
        """``"APP_ID:KEY:SECRET"`` (the CLI's ``--pusher-app``)."""
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(f"a Pusher app is APP_ID:KEY:SECRET, not {len(parts)} parts")
        return cls(parts[0], parts[1], parts[2])

    def __repr__(self) -> str:  # never the secret
        return f"PusherApp(app_id={self.app_id!r}, key={self.key!r})"


def _app(value: object) -> PusherApp:
    if isinstance(value, PusherApp):
        return value
    if isinstance(value, str):
        return PusherApp.parse(value)
    raise ValueError(f"a Pusher app is a PusherApp or 'APP_ID:KEY:SECRET', not a "
                     f"{type(value).__name__}")


class PusherApps:
    """The configured apps, found by key (WebSocket) or id (HTTP API)."""

    def __init__(self, apps: Iterable[object]) -> None:
        self.apps = tuple(_app(a) for a in apps)
        self._by_key = {a.key: a for a in self.apps}
        self._by_id = {a.app_id: a for a in self.apps}
        if len(self._by_key) != len(self.apps) or len(self._by_id) != len(self.apps):
            raise ValueError("two Pusher apps have the same app id or key")

    def by_key(self, key: str) -> PusherApp | None:
        return self._by_key.get(key)

    def by_id(self, app_id: str) -> PusherApp | None:
        return self._by_id.get(app_id)

    def __bool__(self) -> bool:
        return bool(self.apps)

    def __iter__(self) -> Iterator[PusherApp]:
        return iter(self.apps)


__all__ = ["PusherApp", "PusherApps"]

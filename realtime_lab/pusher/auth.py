"""Pusher signatures: channel authorizations, HTTP API requests, webhooks.

All three are HMAC-SHA256 with the app's secret, in lowercase hex, compared in
constant time:

* a private channel's ``auth`` is ``"<key>:" + hmac(secret, "<socket_id>:<channel>")``;
  a presence channel's signs ``"<socket_id>:<channel>:<channel_data>"``, where
  ``channel_data`` is the JSON ``{"user_id": ..., "user_info": {...}}`` sent beside it;
* an HTTP API request signs ``"<METHOD>\\n<path>\\n<query>"``, the query being every
  parameter but ``auth_signature``, keys lowercased and sorted, ``key=value`` joined
  with ``&`` (not URL-encoded), with ``body_md5`` (hex MD5 of a non-empty body);
* a webhook signs its body; the signature goes in ``X-Pusher-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from realtime_lab.pusher.apps import PusherApp

#: Seconds an API request's ``auth_timestamp`` may be away from the server's clock.
TIMESTAMP_WINDOW = 600.0


def sign(secret: str, message: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` with ``secret``."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def channel_auth(app: PusherApp, socket_id: str, channel: str,
                 channel_data: str | None = None) -> str:
    """The ``auth`` string that lets ``socket_id`` subscribe to ``channel``."""
    text = f"{socket_id}:{channel}" if channel_data is None else \
        f"{socket_id}:{channel}:{channel_data}"
    return f"{app.key}:{sign(app.secret, text)}"


def check_channel_auth(app: PusherApp, socket_id: str, channel: str, auth: str,
                       channel_data: str | None = None) -> bool:
    """Whether ``auth`` is the app's signature for this socket, channel (and data)."""
    expected = channel_auth(app, socket_id, channel, channel_data)
    return hmac.compare_digest(expected.encode("utf-8"), auth.encode("utf-8", "replace"))


def authenticate(app: PusherApp, socket_id: str, channel: str,
                 user: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What an auth endpoint answers pusher-js (``{"auth": ...}``, plus ``channel_data``
    on a presence channel: ``user`` is ``{"user_id": ..., "user_info": {...}}``).

    The application decides first whether the user may join; this only signs.
    """
    if channel.startswith("presence-"):
        if not user or "user_id" not in user:
            raise ValueError("a presence channel needs user={'user_id': ..., 'user_info': ...}")
        data = json.dumps(dict(user), separators=(",", ":"))
        return {"auth": channel_auth(app, socket_id, channel, data), "channel_data": data}
    return {"auth": channel_auth(app, socket_id, channel)}


def user_auth(app: PusherApp, socket_id: str, user_data: str) -> str:
    """The ``auth`` of a user sign-in: the signature of ``socket_id::user::user_data``."""
    return f"{app.key}:{sign(app.secret, f'{socket_id}::user::{user_data}')}"


def authenticate_user(app: PusherApp, socket_id: str,
                      user: Mapping[str, Any]) -> dict[str, str]:
    """What a user-authentication endpoint answers pusher-js's ``signin()``:
    ``{"auth": ..., "user_data": ...}``; ``user`` needs an ``id``."""
    if not user or "id" not in user:
        raise ValueError("a user sign-in needs user={'id': ..., ...}")
    data = json.dumps(dict(user), separators=(",", ":"))
    return {"auth": user_auth(app, socket_id, data), "user_data": data}


class ApiAuthError(Exception):
    """An HTTP API request whose signature does not hold (answered 401)."""


def string_to_sign(method: str, path: str, query: Mapping[str, str]) -> str:
    params = "&".join(f"{k}={query[k]}" for k in sorted(query) if k != "auth_signature")
    return f"{method.upper()}\n{path}\n{params}"


def check_request(app: PusherApp, method: str, path: str, query: Mapping[str, str],
                  body: bytes, *, now: float | None = None,
                  window: float = TIMESTAMP_WINDOW) -> None:
    """Check an HTTP API request's signature; raise :class:`ApiAuthError` saying why.

    ``query``: the request's parameters (the last value of each), keys as sent.
    """
    params = {k.lower(): v for k, v in query.items()}
    if params.get("auth_key") != app.key:
        raise ApiAuthError("unknown auth_key")
    if params.get("auth_version") != "1.0":
        raise ApiAuthError("auth_version must be 1.0")
    try:
        stamp = float(params.get("auth_timestamp", ""))
    except ValueError:
        raise ApiAuthError("auth_timestamp must be a number of seconds") from None
    if not abs((time.time() if now is None else now) - stamp) <= window:
        raise ApiAuthError(f"auth_timestamp is more than {int(window)} s away from the "
                           "server's time")
    if body:
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if params.get("body_md5") != md5:
            raise ApiAuthError("body_md5 does not match the body")
    given = params.get("auth_signature", "")
    expected = sign(app.secret, string_to_sign(method, path, params))
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise ApiAuthError("invalid signature: check the app's key and secret")


def webhook_headers(app: PusherApp, body: bytes) -> dict[str, str]:
    """The headers of a webhook POST: ``X-Pusher-Key`` and ``X-Pusher-Signature``."""
    return {"Content-Type": "application/json", "X-Pusher-Key": app.key,
            "X-Pusher-Signature": sign(app.secret, body)}


__all__ = ["TIMESTAMP_WINDOW", "ApiAuthError", "authenticate", "authenticate_user",
           "channel_auth", "user_auth",
           "check_channel_auth", "check_request", "sign", "string_to_sign",
           "webhook_headers"]

"""HTTP endpoints beside the WebSocket: health, channel list, server-side publish."""

from __future__ import annotations

import hmac
import json
import time
from typing import TYPE_CHECKING, Any

from tornado.web import RequestHandler

from realtime_lab._version import __version__
from realtime_lab.core.authz import rule_for
from realtime_lab.errors import ProtocolError
from realtime_lab.protocol import codec

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub


class _JSONHandler(RequestHandler):
    hub: Hub

    def initialize(self, hub: Hub, started_at: float | None = None) -> None:
        self.hub = hub
        self.started_at = started_at or time.time()

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def send_error_json(self, status: int, code: str, message: str) -> None:
        self.send_json({"error": code, "message": message}, status)


class HealthHandler(_JSONHandler):
    """``GET /health``: liveness and a few counters."""

    def get(self) -> None:
        self.send_json({
            "status": "ok",
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "connections": len(self.hub.sessions),
            "channels": len(self.hub.channels),
        })


def carries_api_token(handler: _JSONHandler) -> bool:
    """Whether the request has ``Authorization: Bearer <api_token>`` (the server has one)."""
    token = handler.hub.options.api_token
    if token is None:
        return False
    given = handler.request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def is_listed(hub: Hub, name: str) -> bool:
    """Whether channel ``name`` is shown to anonymous HTTP requests: public channels only.

    Private and presence channels (``private-*``, ``presence-*`` or as the
    ``channel_rules`` say) need authorization to join, so their names, counts and
    metadata are only for requests that carry the API token (docs/security.md).
    """
    return rule_for(name, hub.options.active_channel_rules()).policy == "public"


class ChannelsHandler(_JSONHandler):
    """``GET /api/channels``: every channel with its subscriber count.

    With a broker the counts are cluster-wide (``local_subscribers`` is this node's share).
    Channels that need authorization are left out unless the request carries the API
    token (:func:`is_listed`).
    """

    async def get(self) -> None:
        cluster = getattr(self.hub, "cluster", None)
        channels = (await cluster.channel_list() if cluster is not None
                    else self.hub.channel_list())
        if not carries_api_token(self):
            channels = [c for c in channels if is_listed(self.hub, str(c["name"]))]
        self.send_json({"channels": channels})


class ChannelHandler(_JSONHandler):
    """``GET /api/channels/{name}``: one channel's counts and custom metadata (404 if none,
    or if it needs authorization and the request does not carry the API token).

    ``PATCH`` with ``Authorization: Bearer <api_token>`` and ``{"metadata": {...},
    "replace": false}`` merges (or replaces) the custom metadata; null values delete keys.
    """

    def get(self, name: str) -> None:
        info = self.hub.channel_info(name)
        if info is None or not (is_listed(self.hub, name) or carries_api_token(self)):
            self.send_error_json(404, "not_found", f"no channel {name!r}")
            return
        self.send_json(info)

    def patch(self, name: str) -> None:
        body = _authorized_body(self)
        if body is None:
            return
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            self.send_error_json(400, "missing_field", "body must have a 'metadata' object")
            return
        try:
            self.hub.set_channel_metadata(name, meta, replace=bool(body.get("replace")))
        except ProtocolError as err:
            self.send_error_json(400, err.code, err.message)
            return
        self.send_json(self.hub.channel_info(name))


def _authorized_body(handler: _JSONHandler) -> dict[str, Any] | None:
    """The JSON object body of a bearer-authorized request, or None after an error reply."""
    token = handler.hub.options.api_token
    if token is None:
        handler.send_error_json(403, "api_disabled",
                                "the write API is off; start the server with api_token")
        return None
    if not carries_api_token(handler):
        handler.set_header("WWW-Authenticate", "Bearer")
        handler.send_error_json(401, "unauthorized", "missing or wrong bearer token")
        return None
    return _json_object(handler)


def _json_object(handler: _JSONHandler, code: str = "bad_json",
                 refusal: str = "body must be a JSON object") -> dict[str, Any] | None:
    """The body as a JSON object, or None after a 400 reply (``code``/``refusal`` when
    the body is JSON but not an object).

    ``codec.decode`` refuses what is not JSON (``bad_json``) and values outside the
    data model (``bad_value``: ``1e400``, ``2**64``, a lone surrogate, nesting over
    64), so nothing a subscriber's wire format cannot carry gets in.
    """
    try:
        body = codec.decode((handler.request.body or b"null").decode("utf-8"))
    except UnicodeDecodeError as exc:
        handler.send_error_json(400, "bad_json", f"invalid JSON body: {exc}")
        return None
    except ProtocolError as err:
        handler.send_error_json(400, err.code, f"invalid JSON body: {err.message}")
        return None
    if not isinstance(body, dict):
        handler.send_error_json(400, code, refusal)
        return None
    return body


class ChannelMessagesHandler(_JSONHandler):
    """``POST /api/channels/{name}/messages``: publish from the server side.

    Off unless ``ServerOptions.api_token`` is set; the request then needs
    ``Authorization: Bearer <token>`` and a JSON body ``{"data": ...}``.
    """

    def post(self, name: str) -> None:
        token = self.hub.options.api_token
        if token is None:
            self.send_error_json(403, "api_disabled",
                                 "server-side publish is off; start the server with api_token")
            return
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self.set_header("WWW-Authenticate", "Bearer")
            self.send_error_json(401, "unauthorized", "missing or wrong bearer token")
            return
        refusal = "body must be a JSON object with 'data'"
        body = _json_object(self, "missing_field", refusal)
        if body is None:
            return
        if "data" not in body:
            self.send_error_json(400, "missing_field", refusal)
            return
        try:
            recipients = self.hub.publish(name, body["data"], sender=None)
        except ProtocolError as err:
            self.send_error_json(400, err.code, err.message)
            return
        self.send_json({"channel": name, "recipients": recipients})


class ClusterHandler(_JSONHandler):
    """``GET /api/cluster``: this node's id, broker state, counters and live nodes."""

    async def get(self) -> None:
        cluster = getattr(self.hub, "cluster", None)
        if cluster is None:
            self.send_json({"node": None, "broker": None, "nodes": None})
            return
        described = cluster.describe()
        if not carries_api_token(self):
            described["channels"] = [n for n in described["channels"] if is_listed(self.hub, n)]
        self.send_json({**described, "nodes": await cluster.broker.nodes()})

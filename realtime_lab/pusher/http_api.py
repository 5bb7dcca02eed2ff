"""The Pusher HTTP API (what the Pusher server SDKs call) and the auth endpoint.

Every ``/apps/{app_id}/...`` request is signed (``auth.check_request``); a request
that is not is refused with 401 and a plain-text reason, as Pusher answers. Bodies
are JSON; errors are plain text with the status the SDKs map to their exceptions
(400 bad request, 401 bad auth, 403 forbidden, 404 no such app, 413 too large).

=========================================  ===========================================
``POST /apps/{id}/events``                 one event to 1-100 channels (``socket_id``
                                           excludes that connection)
``POST /apps/{id}/batch_events``           up to 10 events
``GET /apps/{id}/channels``                occupied channels (``filter_by_prefix``,
                                           ``info=user_count,subscription_count``)
``GET /apps/{id}/channels/{name}``         ``occupied``, ``user_count``,
                                           ``subscription_count``
``GET /apps/{id}/channels/{name}/users``   a presence channel's user ids
``POST /apps/{id}/users/{user}/``          closes the user's connections (also at
``terminate_connections``                  ``/users/{user}/...``, with the app of
                                           ``auth_key``, where the Python SDK calls it)
``POST /pusher/auth``                      signs a channel for pusher-js
                                           (``ServerOptions.pusher_auth``)
``POST /pusher/user-auth``                 signs a user sign-in
                                           (``ServerOptions.pusher_user_auth``)
=========================================  ===========================================
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import TYPE_CHECKING, Any

from tornado.web import RequestHandler

from realtime_lab.errors import ProtocolError
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol import codec
from realtime_lab.pusher import protocol as pp
from realtime_lab.pusher.apps import PusherApp, PusherApps
from realtime_lab.pusher.auth import (
    ApiAuthError,
    authenticate,
    authenticate_user,
    check_request,
)
from realtime_lab.pusher.socket import ChannelAuthorizer

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.session import Session
    from realtime_lab.pusher.webhooks import Webhooks

log = logging.getLogger("realtime_lab.pusher")
_throttle = LogThrottle(log)

MAX_CHANNELS_PER_EVENT = 100
MAX_BATCH = 10
INFO_FIELDS = frozenset({"user_count", "subscription_count"})


class ApiError(Exception):
    """A refused API request: its HTTP status and a plain-text reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _ApiHandler(RequestHandler):
    """Finds the app, checks the signature, answers JSON or a plain-text error."""

    def initialize(self, hub: Hub, apps: PusherApps, webhooks: Webhooks | None = None) -> None:
        self.hub = hub
        self.apps = apps

    def app_for(self, app_id: str) -> PusherApp:
        app = self.apps.by_id(app_id)
        if app is None:
            raise ApiError(404, f"Unknown app {app_id[:64]!r}")
        query = {k: v[-1].decode("utf-8", "replace")
                 for k, v in self.request.query_arguments.items()}
        try:
            check_request(app, self.request.method or "", self.request.path, query,
                          self.request.body or b"")
        except ApiAuthError as exc:
            raise ApiError(401, str(exc)) from None
        return app

    def answer(self, payload: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, separators=(",", ":")))

    def refuse(self, err: ApiError) -> None:
        self.set_status(err.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(err.reason + "\n")

    def run(self, work: Any, *args: str) -> None:
        try:
            self.answer(work(*args))
        except ApiError as err:
            self.refuse(err)

    def info_fields(self) -> set[str]:
        info = {f for f in self.get_query_argument("info", "").split(",") if f}
        unknown = info - INFO_FIELDS
        if unknown:
            raise ApiError(400, f"info may be user_count and subscription_count, not "
                                f"{sorted(unknown)[0][:40]!r}")
        return info


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        value = codec.decode(body)
    except (ProtocolError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def event_data(data: Any) -> Any:
    """What the hub carries for an event's ``data``: Pusher sends a string, usually JSON;
    when it parses (within the data model), native clients get the value itself, and
    Pusher clients the same JSON again."""
    if isinstance(data, str) and data[:1] in '{["-0123456789tfn':
        try:
            return codec.decode(data)
        except ProtocolError:
            return data
    return data


class EventsHandler(_ApiHandler):
    """``POST /apps/{id}/events`` and ``POST /apps/{id}/batch_events``."""

    def post(self, app_id: str, kind: str) -> None:
        self.run(self._trigger, app_id, kind)

    def _trigger(self, app_id: str, kind: str) -> dict[str, Any]:
        app = self.app_for(app_id)
        body = _json_body(self.request.body)
        if kind == "events":
            self._publish(app, body, list(_channels(body)))
            return {}
        batch = body.get("batch")
        if not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH:
            raise ApiError(400, f"batch must be a list of 1 to {MAX_BATCH} events")
        events = [e if isinstance(e, dict) else {} for e in batch]
        plans = [(e, [_channel(e.get("channel"))]) for e in events]
        for event, channels in plans:
            self._check(app, event, channels)
        for event, channels in plans:
            self._publish(app, event, channels)
        return {"batch": [{} for _ in plans]}

    def _check(self, app: PusherApp, event: dict[str, Any], channels: list[str]) -> None:
        name = event.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= pp.MAX_EVENT_NAME:
            raise ApiError(400, f"name must be a string of 1 to {pp.MAX_EVENT_NAME} characters")
        data = event.get("data")
        size = len((data if isinstance(data, str) else json.dumps(data)).encode())
        if size > app.max_event_bytes:
            raise ApiError(413, f"data is {size} bytes; the limit is {app.max_event_bytes}")
        socket_id = event.get("socket_id")
        if socket_id is not None and (not isinstance(socket_id, str)
                                      or pp.session_id_of(socket_id) is None):
            raise ApiError(400, "socket_id must look like 1234.5678")
        for channel in channels:
            try:
                self.hub.services.registry.validate(channel)
            except ProtocolError as exc:
                raise ApiError(400, exc.message) from None

    def _publish(self, app: PusherApp, event: dict[str, Any], channels: list[str]) -> None:
        self._check(app, event, channels)
        exclude = self._session(event.get("socket_id"))
        data = event_data(event.get("data"))
        for channel in channels:
            try:
                self.hub.publish(channel, data, event=event["name"], exclude=exclude)
            except ProtocolError as exc:
                raise ApiError(400, exc.message) from None

    def _session(self, socket_id: Any) -> Session | None:
        if not isinstance(socket_id, str):
            return None
        sid = pp.session_id_of(socket_id)
        return self.hub.sessions.get(sid) if sid is not None else None


def _channel(value: Any) -> str:
    """A channel of an event, by its hub name (``#server-to-user-*`` is a user's)."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "a channel must be a non-empty string")
    return pp.hub_channel(value)


def _channels(body: dict[str, Any]) -> list[str]:
    channels = body.get("channels")
    if channels is None and "channel" in body:
        channels = [body["channel"]]
    if not isinstance(channels, list) or not 0 < len(channels) <= MAX_CHANNELS_PER_EVENT:
        raise ApiError(400, f"channels must be a list of 1 to {MAX_CHANNELS_PER_EVENT} names")
    return [_channel(c) for c in channels]


def _counts(hub: Hub, name: str, info: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    described = hub.channel_info(name) or {}
    if "user_count" in info:
        out["user_count"] = len(hub.presence(name))
    if "subscription_count" in info:
        subscribers = described.get("subscribers")
        out["subscription_count"] = subscribers if isinstance(subscribers, int) else 0
    return out


class ChannelsHandler(_ApiHandler):
    """``GET /apps/{id}/channels``: the occupied channels."""

    def get(self, app_id: str) -> None:
        self.run(self._list, app_id)

    def _list(self, app_id: str) -> dict[str, Any]:
        self.app_for(app_id)
        prefix = self.get_query_argument("filter_by_prefix", "")
        info = self.info_fields()
        if "user_count" in info and not pp.is_presence(prefix):
            raise ApiError(400, "info=user_count needs filter_by_prefix=presence-")
        channels: dict[str, Any] = {}
        for entry in self.hub.channel_list():
            name = str(entry.get("name"))
            if name.startswith(prefix) and entry.get("subscribers"):
                channels[name] = _counts(self.hub, name, info)
        return {"channels": channels}


class ChannelHandler(_ApiHandler):
    """``GET /apps/{id}/channels/{name}``: is it occupied, and its counts."""

    def get(self, app_id: str, name: str) -> None:
        self.run(self._info, app_id, name)

    def _info(self, app_id: str, name: str) -> dict[str, Any]:
        self.app_for(app_id)
        info = self.info_fields()
        if "user_count" in info and not pp.is_presence(name):
            raise ApiError(400, "user_count is only for presence channels")
        described = self.hub.channel_info(name) or {}
        return {"occupied": bool(described.get("subscribers")), **_counts(self.hub, name, info)}


class ChannelUsersHandler(_ApiHandler):
    """``GET /apps/{id}/channels/{name}/users``: a presence channel's members."""

    def get(self, app_id: str, name: str) -> None:
        self.run(self._users, app_id, name)

    def _users(self, app_id: str, name: str) -> dict[str, Any]:
        self.app_for(app_id)
        if not pp.is_presence(name):
            raise ApiError(400, "users are only listed for presence channels")
        return {"users": [{"id": user} for user in self.hub.presence(name)]}


class TerminateHandler(_ApiHandler):
    """``POST /apps/{id}/users/{user}/terminate_connections``: close every connection
    of the app signed in as ``user`` (close code 4009, which pusher-js does not retry)."""

    def post(self, *path: str) -> None:
        self.run(self._terminate, *path)

    def _terminate(self, *path: str) -> dict[str, Any]:
        """``path``: (app id, user), or (user) at ``/users/{user}/...`` (where the Python
        SDK calls it: the app is the one of ``auth_key``)."""
        if len(path) == 1:
            key = self.get_query_argument("auth_key", "")
            found = self.apps.by_key(key)
            app = self.app_for(found.app_id if found is not None else "")
        else:
            app = self.app_for(path[0])
        user = path[-1]
        for session in list(self.hub.sessions.values()):
            authorizer = session.authorizer
            if isinstance(authorizer, ChannelAuthorizer) and authorizer.app is app \
                    and authorizer.user == user:
                self.hub.close(session, pp.UNAUTHORIZED, "connections of the user terminated")
        return {}


class UserAuthHandler(RequestHandler):
    """``POST /pusher/user-auth`` (form field ``socket_id``): pusher-js's ``signin()``
    endpoint. ``ServerOptions.pusher_user_auth(handler, socket_id)`` returns the user
    (a dict with an ``id``) or anything else (403). ``?key=`` picks the app."""

    def initialize(self, apps: PusherApps, authorize: Any) -> None:
        self.apps = apps
        self.authorize = authorize

    async def post(self) -> None:
        socket_id = self.get_body_argument("socket_id", "")
        app = _app_of(self.apps, self.get_query_argument("key", None))
        if app is None or pp.session_id_of(socket_id) is None:
            self.set_status(400)
            self.finish("socket_id (and ?key= with several apps) are needed\n")
            return
        verdict = await _decide(self.authorize, self, socket_id)
        if not isinstance(verdict, dict) or not isinstance(verdict.get("id"), str):
            self.set_status(403)
            self.finish("forbidden\n")
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(authenticate_user(app, socket_id, verdict)))


def _app_of(apps: PusherApps, key: str | None) -> PusherApp | None:
    if key is not None:
        return apps.by_key(key)
    return apps.apps[0] if len(apps.apps) == 1 else None


async def _decide(authorize: Any, *args: Any) -> Any:
    """The application's verdict (sync or async); a failing callback refuses."""
    try:
        verdict = authorize(*args)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:
        _throttle.log("pusher_auth_failed", logging.ERROR, "a Pusher auth callback failed",
                      exc_info=True)
        return None
    return verdict


class AuthHandler(RequestHandler):
    """``POST /pusher/auth`` (form fields ``socket_id``, ``channel_name``): pusher-js's
    auth endpoint. ``ServerOptions.pusher_auth(handler, socket_id, channel)`` decides:
    True allows, ``{"user_id": ..., "user_info": {...}}`` allows a presence member,
    anything else is answered 403. ``?key=`` picks the app when there are several."""

    def initialize(self, apps: PusherApps, authorize: Any) -> None:
        self.apps = apps
        self.authorize = authorize

    async def post(self) -> None:
        socket_id = self.get_body_argument("socket_id", "")
        channel = self.get_body_argument("channel_name", "")
        app = _app_of(self.apps, self.get_query_argument("key", None))
        if app is None or pp.session_id_of(socket_id) is None or not channel:
            self.set_status(400)
            self.finish("socket_id, channel_name (and ?key= with several apps) are needed\n")
            return
        verdict = await _decide(self.authorize, self, socket_id, channel)
        if verdict is True and not pp.is_presence(channel):
            answer = authenticate(app, socket_id, channel)
        elif isinstance(verdict, dict) and "user_id" in verdict:
            answer = authenticate(app, socket_id, channel, verdict)
        else:
            self.set_status(403)
            self.finish("forbidden\n")
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))


__all__ = ["AuthHandler", "ChannelHandler", "ChannelUsersHandler", "ChannelsHandler",
           "EventsHandler", "TerminateHandler", "UserAuthHandler", "event_data"]

"""One exception tree for the whole package.

Every error that the server reports to a client knows its wire error ``code``
(a short string, see docs/protocol.md) and, when it ends the connection, its
WebSocket ``close_code`` (numbers from realtime_lab.protocol.close_codes;
this module imports nothing from the package so every layer can import it).
"""

from __future__ import annotations

from typing import Self


class RealtimeLabError(Exception):
    """Base class of every error raised by realtime_lab."""


class ProtocolError(RealtimeLabError):
    """A client sent something the protocol does not allow.

    ``code`` is the error code put in the ``error`` reply. When ``close_code`` is
    not None the connection is closed with it after the reply. Each class has
    its own; ``code`` and ``close_code`` given at construction override them for
    this error (a hook's ``Refuse(code, reason)``, see
    :meth:`realtime_lab.core.hooks.Refuse.error`). ``request_id`` is the ``id`` of
    the request the error answers, when one is known where the error is built
    (the hub answers with the id of the request it is handling,
    :class:`realtime_lab.core.requests.Request`).
    """

    code: str = "bad_request"
    close_code: int | None = None

    def __init__(self, message: str, *, request_id: int | str | None = None,
                 code: str | None = None, close_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        if code is not None:
            self.code = code
        if close_code is not None:
            self.close_code = close_code

    def for_request(self, request_id: int | str | None) -> Self:
        """This error answering request ``request_id``: itself when it already does,
        else a copy (an error is never changed once built: it may have been raised)."""
        if request_id == self.request_id:
            return self
        cls = type(self)
        copy = cls.__new__(cls, *self.args)
        copy.__dict__.update(self.__dict__)
        copy.request_id = request_id
        return copy


class BadJSON(ProtocolError):
    """A text frame that is not valid JSON (NaN and Infinity are refused too)."""

    code = "bad_json"


class NotAnObject(ProtocolError):
    """A JSON value that is not an object (an array, a string, a number...)."""

    code = "not_object"


class UnknownType(ProtocolError):
    """A ``type`` the protocol does not have."""

    code = "unknown_type"


class MissingField(ProtocolError):
    """A required field (``type``, ``channel``, ``data``...) is missing."""

    code = "missing_field"


class BadField(ProtocolError):
    """A field has the wrong type or value (``id``, ``priority``, ``channel``...)."""

    code = "bad_field"


class BadChannel(ProtocolError):
    """A channel name that is empty, too long or does not match ``channel_pattern``."""

    code = "bad_channel"


class BinaryNotSupported(ProtocolError):
    """A binary frame on a JSON connection (binary needs the MessagePack subprotocol)."""

    code = "binary_not_supported"


class BadMessagePack(ProtocolError):
    """A binary frame on the msgpack protocol that is not a valid message encoding."""

    code = "bad_msgpack"


class BadValue(ProtocolError, ValueError):
    """A value outside the data model that every wire format carries (docs/protocol.md,
    "Values"): NaN or an infinity (``1e400``), an integer outside -2**63 .. 2**64-1,
    a lone surrogate, a key that is not a string, nesting deeper than 64 levels.

    Refused before anything is stored or delivered. Also a ``ValueError``, so that
    ``Hub.publish`` and the other server-side calls raise what Python code expects.
    """

    code = "bad_value"


class Forbidden(ProtocolError):
    """A ``publish`` not allowed by ``client_publish``, ``publish_channels`` or a rule."""

    code = "forbidden"


class NotSubscribed(ProtocolError):
    """``unsubscribe`` from (or ``receipts`` for) a channel this connection is not in."""

    code = "not_subscribed"


class TooManySubscriptions(ProtocolError):
    """A ``subscribe`` beyond ``max_subscriptions``."""

    code = "too_many_subscriptions"


class MessageTooBig(ProtocolError):
    """A message over ``max_message_bytes``; the WebSocket layer closes with 1009."""

    code = "message_too_big"
    close_code = 1009  # CloseCode.MESSAGE_TOO_BIG


class TooManyErrors(ProtocolError):
    """A connection sent ``ServerOptions.error_limit`` invalid messages within its window.

    Sent after the error of the last invalid message; the connection is then closed
    with 4008 (advice STOP: sending the same input again would be refused again).
    """

    code = "too_many_errors"
    close_code = 4008  # CloseCode.TOO_MANY_ERRORS


class RateLimited(ProtocolError):
    """A rate limit refused this message (the connection stays open)."""

    code = "rate_limited"


class RateLimitAbuse(ProtocolError):
    """Repeated rate-limit violations: the connection is closed."""

    code = "rate_limit_abuse"
    close_code = 4102  # CloseCode.RATE_LIMITED


class MessageRefused(ProtocolError):
    """The on_message hook or a middleware dropped this message."""

    code = "message_refused"


class SubscribeRefused(ProtocolError):
    """The ``on_subscribe`` hook refused the subscription."""

    code = "subscribe_refused"


class UnsubscribeRefused(ProtocolError):
    """The ``on_unsubscribe`` hook refused the unsubscription."""

    code = "unsubscribe_refused"


class ChannelUnauthorized(ProtocolError):
    """A private or presence channel refused the subscribe (no, or a bad, authorization)."""

    code = "channel_unauthorized"


class ChannelTokenExpired(ProtocolError):
    """The channel token in a subscribe message has expired."""

    code = "channel_token_expired"


class PresenceFull(ProtocolError):
    """A presence channel has ``max_presence_members`` members already."""

    code = "presence_full"


class BadPresenceState(ProtocolError):
    """A ``presence`` message named a state that is not in ``presence_states``."""

    code = "bad_presence_state"


class PresenceMetaTooLarge(ProtocolError):
    """Presence metadata larger than ``max_presence_meta_bytes`` (encoded)."""

    code = "presence_meta_too_large"


class PresenceMetaFull(ProtocolError):
    """A member's metadata would take the channel's presence metadata, all members
    together, past ``max_presence_channel_meta_bytes``."""

    code = "presence_meta_full"


class PresenceRefused(ProtocolError):
    """The ``on_presence`` hook vetoed a ``presence`` change (False or ``Refuse``)."""

    code = "presence_refused"


class HookFailed(ProtocolError):
    """A hook raised: treated as a refusal."""

    code = "hook_failed"


class HookTimeout(ProtocolError):
    """An async hook took longer than its timeout: treated as a refusal."""

    code = "hook_timeout"


class Unauthorized(ProtocolError):
    """The connect token is missing, malformed or has a bad signature."""

    code = "unauthorized"
    close_code = 4001  # CloseCode.UNAUTHORIZED


class TokenExpired(ProtocolError):
    """The connect token has expired."""

    code = "token_expired"
    close_code = 4001  # CloseCode.UNAUTHORIZED


class ConnectRefused(ProtocolError):
    """The on_connect hook refused the connection."""

    code = "connect_refused"
    close_code = 4005  # CloseCode.CONNECT_REFUSED


class ServerFull(ProtocolError):
    """``max_connections`` reached: the connection is closed with 4103."""

    code = "server_full"
    close_code = 4103  # CloseCode.SERVER_FULL


class TooManyConnectionsFromIP(ProtocolError):
    """``max_connections_per_ip`` reached: the connection is closed with 4104."""

    code = "too_many_connections_from_ip"
    close_code = 4104  # CloseCode.IP_LIMIT


class IdleTimeout(ProtocolError):
    """No message for ``idle_timeout`` seconds: the connection is closed with 4105."""

    code = "idle_timeout"
    close_code = 4105  # CloseCode.IDLE_TIMEOUT


class InternalError(ProtocolError):
    """Something failed inside the server while handling this message."""

    code = "internal_error"


class ServerError(RealtimeLabError):
    """Something went wrong inside the server (never the client's fault)."""


class PortInUseError(ServerError):
    """The requested host and port are already taken by another listener."""


class ServerNotRunning(ServerError):
    """An operation needs a running server."""


class ClientError(RealtimeLabError):
    """Base class of errors raised by the Python client."""


class ConnectionClosed(ClientError):
    """The connection is closed; ``code`` and ``reason`` say why."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class RequestFailed(ClientError):
    """The server answered a request with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class MissingDependency(RealtimeLabError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise MissingDependency with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            f"{module} is not installed; install it with: pip install 'realtime_lab[{extra}]'"
        ) from exc

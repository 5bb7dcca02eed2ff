"""WebSocket close codes and what a client should do after each one.

Ranges (documented in docs/protocol.md):

* 1000-1015: RFC 6455 codes, with the advice below.
* 4000-4099: do not reconnect (the client must change something first).
* 4100-4199: reconnect after a back-off delay.
* 4200-4299: reconnect at once (the server asked the client to move).
"""

from __future__ import annotations

import enum


class ReconnectAdvice(enum.Enum):
    """What a client should do after the connection closed with a given code."""

    RECONNECT_NOW = "reconnect_now"
    BACKOFF = "backoff"
    STOP = "stop"


class CloseCode(enum.IntEnum):
    """Close codes the server sends, with their meaning in the docstring of each range."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server stopping
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013

    # 4000-4099: fatal, do not reconnect without a change.
    UNAUTHORIZED = 4001
    FORBIDDEN_ORIGIN = 4003
    CONNECT_REFUSED = 4005  # the on_connect hook refused
    BAD_REQUEST = 4004
    TOO_MANY_ERRORS = 4008  # error_limit invalid messages within its window

    # 4100-4199: reconnect after back-off.
    SLOW_CONSUMER = 4100
    HEARTBEAT_TIMEOUT = 4101
    RATE_LIMITED = 4102
    SERVER_FULL = 4103  # max_connections reached
    IP_LIMIT = 4104  # max_connections_per_ip reached
    IDLE_TIMEOUT = 4105  # no message for idle_timeout seconds

    # 4200-4299: reconnect at once.
    RECONNECT = 4200


_STANDARD_ADVICE: dict[int, ReconnectAdvice] = {
    1000: ReconnectAdvice.STOP,
    1001: ReconnectAdvice.RECONNECT_NOW,
    1002: ReconnectAdvice.STOP,
    1003: ReconnectAdvice.STOP,
    1005: ReconnectAdvice.BACKOFF,  # no status received
    1006: ReconnectAdvice.BACKOFF,  # abnormal closure (connection lost)
    1007: ReconnectAdvice.STOP,
    1008: ReconnectAdvice.STOP,
    1009: ReconnectAdvice.STOP,
    1011: ReconnectAdvice.BACKOFF,
    1012: ReconnectAdvice.RECONNECT_NOW,
    1013: ReconnectAdvice.BACKOFF,
}


def valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 7.4 and the IANA registry).

    1005, 1006 and 1015 are reserved for reporting and never sent; 1016-2999 are
    unassigned; 3000-4999 are for libraries and applications.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def advice_for(code: int | None) -> ReconnectAdvice:
    """Return what a client should do after a close with ``code``.

    ``None`` (no close frame: the connection was lost) means back off and retry.
    """
    if code is None:
        return ReconnectAdvice.BACKOFF
    if code in _STANDARD_ADVICE:
        return _STANDARD_ADVICE[code]
    if 4000 <= code <= 4099:
        return ReconnectAdvice.STOP
    if 4100 <= code <= 4199:
        return ReconnectAdvice.BACKOFF
    if 4200 <= code <= 4299:
        return ReconnectAdvice.RECONNECT_NOW
    return ReconnectAdvice.BACKOFF

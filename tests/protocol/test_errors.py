"""The exception tree: each protocol error knows its wire code and, if fatal, its close code."""

from __future__ import annotations

import json

import pytest

from realtime_lab import errors

EXPECTED = {
    errors.ProtocolError: ("bad_request", None),
    errors.BadJSON: ("bad_json", None),
    errors.NotAnObject: ("not_object", None),
    errors.UnknownType: ("unknown_type", None),
    errors.MissingField: ("missing_field", None),
    errors.BadField: ("bad_field", None),
    errors.BadChannel: ("bad_channel", None),
    errors.BinaryNotSupported: ("binary_not_supported", None),
    errors.BadMessagePack: ("bad_msgpack", None),
    errors.Forbidden: ("forbidden", None),
    errors.NotSubscribed: ("not_subscribed", None),
    errors.TooManySubscriptions: ("too_many_subscriptions", None),
    errors.MessageTooBig: ("message_too_big", 1009),
    errors.TooManyErrors: ("too_many_errors", 4008),
    # issue 4: hooks, middleware, security limits
    errors.RateLimited: ("rate_limited", None),
    errors.RateLimitAbuse: ("rate_limit_abuse", 4102),
    errors.MessageRefused: ("message_refused", None),
    errors.SubscribeRefused: ("subscribe_refused", None),
    errors.UnsubscribeRefused: ("unsubscribe_refused", None),
    errors.HookFailed: ("hook_failed", None),
    errors.HookTimeout: ("hook_timeout", None),
    errors.Unauthorized: ("unauthorized", 4001),
    errors.TokenExpired: ("token_expired", 4001),
    errors.ConnectRefused: ("connect_refused", 4005),
    errors.ServerFull: ("server_full", 4103),
    errors.TooManyConnectionsFromIP: ("too_many_connections_from_ip", 4104),
    errors.IdleTimeout: ("idle_timeout", 4105),
    errors.InternalError: ("internal_error", None),
    # issue 5: private and presence channels
    errors.ChannelUnauthorized: ("channel_unauthorized", None),
    errors.ChannelTokenExpired: ("channel_token_expired", None),
    errors.PresenceFull: ("presence_full", None),
    errors.BadPresenceState: ("bad_presence_state", None),
    errors.PresenceMetaTooLarge: ("presence_meta_too_large", None),
    errors.PresenceMetaFull: ("presence_meta_full", None),
    errors.PresenceRefused: ("presence_refused", None),
    # issue 13: the data model
    errors.BadValue: ("bad_value", None),
}


def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | all_subclasses(sub)
    return out


def test_every_protocol_error_is_listed() -> None:
    package_errors = {c for c in all_subclasses(errors.ProtocolError)
                      if c.__module__ == "realtime_lab.errors"}
    assert package_errors | {errors.ProtocolError} == set(EXPECTED)


@pytest.mark.parametrize(("cls", "expected"), EXPECTED.items(),
                         ids=lambda v: getattr(v, "__name__", ""))
def test_codes(cls: type[errors.ProtocolError], expected: tuple[str, int | None]) -> None:
    err = cls("what happened", request_id=3)
    assert (err.code, err.close_code) == expected
    assert err.message == "what happened" == str(err)
    assert err.request_id == 3
    assert isinstance(err, errors.RealtimeLabError)


def test_codes_are_unique() -> None:
    codes = [code for code, _ in EXPECTED.values()]
    assert len(codes) == len(set(codes))


def test_tree() -> None:
    assert issubclass(errors.PortInUseError, errors.ServerError)
    assert issubclass(errors.ServerNotRunning, errors.ServerError)
    assert issubclass(errors.ServerError, errors.RealtimeLabError)
    assert issubclass(errors.ConnectionClosed, errors.ClientError)
    assert issubclass(errors.RequestFailed, errors.ClientError)
    assert issubclass(errors.MissingDependency, ImportError)


def test_client_errors_carry_details() -> None:
    closed = errors.ConnectionClosed(4100, "slow")
    assert (closed.code, closed.reason) == (4100, "slow")
    assert "4100" in str(closed) and "slow" in str(closed)
    failed = errors.RequestFailed("forbidden", "no")
    assert (failed.code, failed.message) == ("forbidden", "no")
    assert str(failed) == "forbidden: no"


def test_require() -> None:
    assert errors.require("json", "test") is json

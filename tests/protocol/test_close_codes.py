"""Close codes, their ranges, and the advice a client follows after each."""

from __future__ import annotations

import pytest

from realtime_lab import errors
from realtime_lab.protocol import CloseCode, ReconnectAdvice, advice_for

STOP, BACKOFF, NOW = ReconnectAdvice.STOP, ReconnectAdvice.BACKOFF, ReconnectAdvice.RECONNECT_NOW


@pytest.mark.parametrize(("code", "advice"), [
    (None, BACKOFF),
    (1000, STOP),
    (1001, NOW),
    (1002, STOP),
    (1003, STOP),
    (1005, BACKOFF),
    (1006, BACKOFF),
    (1007, STOP),
    (1008, STOP),
    (1009, STOP),
    (1011, BACKOFF),
    (1012, NOW),
    (1013, BACKOFF),
    (4000, STOP),
    (4001, STOP),
    (4008, STOP),
    (4099, STOP),
    (4100, BACKOFF),
    (4101, BACKOFF),
    (4199, BACKOFF),
    (4200, NOW),
    (4299, NOW),
    (4300, BACKOFF),
    (3000, BACKOFF),
    (1004, BACKOFF),
])
def test_advice_for(code: int | None, advice: ReconnectAdvice) -> None:
    assert advice_for(code) is advice


def test_every_server_close_code_has_the_advice_of_its_range() -> None:
    for code in CloseCode:
        advice = advice_for(code)
        if 4000 <= code < 4100:
            assert advice is STOP, code
        elif 4100 <= code < 4200:
            assert advice is BACKOFF, code
        elif 4200 <= code < 4300:
            assert advice is NOW, code
        else:
            assert 1000 <= code < 1016


def test_named_codes() -> None:
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.SLOW_CONSUMER == 4100
    assert CloseCode.HEARTBEAT_TIMEOUT == 4101
    assert CloseCode.TOO_MANY_ERRORS == 4008
    assert CloseCode.BAD_REQUEST == 4004


def test_errors_close_codes_match_the_table() -> None:
    assert errors.MessageTooBig.close_code == CloseCode.MESSAGE_TOO_BIG
    assert errors.TooManyErrors.close_code == CloseCode.TOO_MANY_ERRORS

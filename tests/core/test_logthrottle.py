"""LogThrottle: one record per kind per interval, the held-back count on the next one."""

from __future__ import annotations

import logging

import pytest

from realtime_lab.logthrottle import LogThrottle
from realtime_lab.testing import ManualClock


def test_one_record_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    throttle = LogThrottle(logging.getLogger("rtl.test.throttle"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="rtl.test.throttle"):
        assert throttle.log("bad", logging.WARNING, "bad input %d", 1)
        for i in range(1000):
            assert not throttle.log("bad", logging.WARNING, "bad input %d", i)
        assert throttle.log("other", logging.WARNING, "another kind")
        assert throttle.held_back("bad") == 1000
        clock.advance(10.0)
        assert throttle.log("bad", logging.WARNING, "bad input %d", 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad input 1",
        "another kind",
        "bad input 2 (1000 more like this in the last 10 s not logged)",
    ]
    assert throttle.held_back("bad") == 0


def test_disabled_level_costs_no_slot(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("rtl.test.throttle2"), interval=10.0)
    logging.getLogger("rtl.test.throttle2").setLevel(logging.ERROR)
    assert not throttle.log("k", logging.INFO, "quiet")
    assert throttle.allow("k") == 0


def test_kinds_table_is_bounded() -> None:
    clock = ManualClock()
    throttle = LogThrottle(logging.getLogger("rtl.test.throttle3"), interval=10.0, clock=clock,
                           max_kinds=4)
    for i in range(100):
        throttle.allow(f"kind{i}")
    assert len(throttle._kinds) == 4


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        LogThrottle(logging.getLogger("x"), interval=-1)

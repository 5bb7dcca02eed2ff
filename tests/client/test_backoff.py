"""Backoff with jitter: pure functions, checked with a seeded RNG."""

from __future__ import annotations

import random

import pytest

from realtime_lab.client import Backoff, ClientOptions, Jitter


def test_ceiling_grows_by_factor_and_caps() -> None:
    b = Backoff(initial=0.5, factor=2.0, max_delay=20.0, jitter="none")
    assert [b.ceiling(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    assert b.ceiling(10_000) == 20.0  # no overflow for huge attempt numbers


def test_none_jitter_is_the_ceiling() -> None:
    b = Backoff(initial=1.0, factor=1.5, max_delay=5.0, jitter=Jitter.NONE)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.5, 2.25, 3.375, 5.0]


def test_full_jitter_stays_in_zero_to_ceiling_and_spreads() -> None:
    b = Backoff(initial=0.5, factor=2.0, max_delay=20.0, jitter="full")
    rng = random.Random(42)
    delays = [b.delay(3, rng) for _ in range(5000)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    # Uniform on [0, 2]: mean 1, each quarter holds about a quarter.
    assert abs(sum(delays) / len(delays) - 1.0) < 0.05
    for q in range(4):
        share = sum(q * 0.5 <= d < (q + 1) * 0.5 for d in delays) / len(delays)
        assert 0.22 < share < 0.28


def test_equal_jitter_stays_in_upper_half() -> None:
    b = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter="equal")
    rng = random.Random(7)
    delays = [b.delay(4, rng) for _ in range(2000)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 4.1 and max(delays) > 7.9


def test_same_seed_same_delays() -> None:
    b = Backoff()
    first = [b.delay(n, random.Random(1)) for n in range(1, 6)]
    again = [b.delay(n, random.Random(1)) for n in range(1, 6)]
    assert first == again


@pytest.mark.parametrize("kwargs", [{"initial": -1}, {"factor": 0.5}, {"max_delay": -2},
                                    {"jitter": "sometimes"}])
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError):
        Backoff().ceiling(0)


def test_documented_defaults() -> None:
    opts = ClientOptions()
    assert opts.reconnect is False
    assert opts.backoff == Backoff(initial=0.5, factor=2.0, max_delay=20.0, jitter="full")
    assert opts.max_attempts is None and opts.buffer_size == 100
    assert opts.reconnect_now_window == 0.5 and opts.connect_timeout == 10.0
    with pytest.raises(TypeError):
        opts.with_changes(no_such_option=1)
    with pytest.raises(ValueError):
        ClientOptions(connect_timeout=0)

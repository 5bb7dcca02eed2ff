"""Exponential backoff with jitter: pure functions of the attempt number and a RNG.

``delay = min(max_delay, initial * factor ** (attempt - 1))``, then jitter:

* ``full``: uniform in ``[0, delay]`` (AWS "full jitter"; spreads a reconnect storm
  over the whole window; the default, as in Centrifugo);
* ``equal``: ``delay / 2`` plus uniform in ``[0, delay / 2]`` (never reconnects
  sooner than half the window);
* ``none``: exactly ``delay`` (every client that lost its connection at the same
  moment retries at the same moment: only for tests and demonstrations).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Protocol


class Jitter(enum.Enum):
    """How a backoff delay is randomized."""

    FULL = "full"
    EQUAL = "equal"
    NONE = "none"


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Backoff settings.

    Attributes:
        initial: delay before the first retry, before jitter (seconds).
        factor: growth of the delay per attempt.
        max_delay: cap of the delay, before jitter (seconds).
        jitter: ``full``, ``equal`` or ``none`` (a :class:`Jitter` or its value).
    """

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 20.0
    jitter: Jitter | str = Jitter.FULL

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max_delay < 0:
            raise ValueError("initial and max_delay must be >= 0")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        object.__setattr__(self, "jitter", Jitter(self.jitter))

    def ceiling(self, attempt: int) -> float:
        """The delay for ``attempt`` (1, 2, ...) before jitter."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # Compare in the exponent to avoid overflow for large attempt numbers.
        delay = self.initial
        for _ in range(attempt - 1):
            delay *= self.factor
            if delay >= self.max_delay:
                return self.max_delay
        return min(delay, self.max_delay)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The randomized delay before ``attempt`` (1, 2, ...)."""
        return jittered(self.ceiling(attempt), Jitter(self.jitter), rng or random)


class Uniform(Protocol):
    """Anything with ``uniform(a, b)``: a ``random.Random`` or the ``random`` module."""

    def uniform(self, a: float, b: float) -> float: ...


def jittered(delay: float, jitter: Jitter, rng: Uniform) -> float:
    """Apply ``jitter`` to ``delay`` with ``rng`` (anything with ``uniform``)."""
    uniform = rng.uniform
    if jitter is Jitter.FULL:
        return float(uniform(0.0, delay))
    if jitter is Jitter.EQUAL:
        return delay / 2 + float(uniform(0.0, delay / 2))
    return delay

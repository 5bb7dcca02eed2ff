"""Closing a connection that keeps sending invalid messages (``too_many_errors``, close 4008).

Every invalid message is answered with its own ``error`` and the connection stays
open. A client that keeps sending them is broken or probing; with
``ServerOptions.error_limit = (count, window)`` (default ``(20, 10.0)``) the
``count``-th invalid message within ``window`` seconds is answered with its
error, then with ``too_many_errors``, and the connection is closed with 4008.
Only malformed input counts (the codes in :data:`INVALID_INPUT_CODES`); refusals
a well-formed request can meet (``forbidden``, ``rate_limited``, authorization,
hooks) and the server's own ``internal_error`` do not.
"""

from __future__ import annotations

from collections import deque

from realtime_lab.core.session import Session
from realtime_lab.errors import TooManyErrors

#: Error codes that mean "this message was not valid protocol".
INVALID_INPUT_CODES = frozenset({
    "bad_json", "not_object", "missing_field", "bad_field", "unknown_type", "bad_channel",
    "binary_not_supported", "bad_msgpack", "bad_value",
})


def count_invalid(session: Session, now: float,
                  limit: tuple[int, float]) -> TooManyErrors | None:
    """Count one invalid message of ``session`` at ``now``.

    Returns the error to close the connection with when ``limit = (count, window)``
    is reached: ``count`` invalid messages within the last ``window`` seconds.
    """
    count, window = limit
    times = session.invalid_times
    if times is None:
        times = session.invalid_times = deque()
    times.append(now)
    while times and times[0] <= now - window:
        times.popleft()
    if len(times) < count:
        return None
    return TooManyErrors(f"{len(times)} invalid messages within {window:g} s "
                         f"(error_limit={count}/{window:g} s): closing")

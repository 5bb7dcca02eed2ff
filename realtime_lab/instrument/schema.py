"""The recorded tables and their columns (docs/metrics.md is generated from the same facts).

Every table starts with ``t``: seconds since the recorder started, on a monotonic
clock. ``to_frame`` adds ``time``, the wall-clock UTC timestamp of the same instant.
"""

from __future__ import annotations

from realtime_lab.instrument.ring import Column

T = Column("t", "d", "s", "seconds since the recorder started (monotonic clock)")

BROADCASTS = (
    T,
    Column("channel", "O", "", "channel name"),
    Column("fanout", "q", "connections", "subscribers of the channel when it was published"),
    Column("delivered", "q", "connections", "subscribers whose outbound queue took the frame"),
    Column("drops", "q", "connections",
           "subscribers that did not get it (slow consumer or closing), the sender excluded"),
    Column("payload_bytes", "q", "bytes", "size of the JSON WebSocket frame built once and shared"),
    Column("encode_us", "d", "us", "time to serialize the message and build the JSON frame"),
    Column("enqueue_us", "d", "us",
           "time to append the frame to every subscriber's queue (frames of other wire "
           "formats, msgpack or compressed, are built once during this step)"),
)

CONNECTIONS = (
    T,
    Column("session", "O", "", "session id"),
    Column("user", "O", "", "user id (presence key)"),
    Column("queue_frames", "q", "frames", "frames waiting in the hub for the end of the loop turn"),
    Column("queue_bytes", "q", "bytes",
           "bytes waiting: hub queue plus what the transport has not yet sent"),
    Column("messages_in", "q", "messages", "messages received from the client since it connected"),
    Column("messages_out", "q", "messages", "frames written to the client since it connected"),
    Column("bytes_in", "q", "bytes", "bytes received since it connected (text length)"),
    Column("bytes_out", "q", "bytes", "bytes written since it connected"),
    Column("rtt_ms", "d", "ms", "last heartbeat round trip (NaN before the first pong)"),
)

CHANNELS = (
    T,
    Column("channel", "O", "", "channel name"),
    Column("subscribers", "q", "connections", "subscribed connections"),
    Column("members", "q", "users", "presence members (users, however many connections each)"),
    Column("messages", "q", "messages", "messages published to the channel so far"),
)

MEMORY = (
    T,
    Column("rss_bytes", "q", "bytes", "resident set size of the server process"),
    Column("heap_bytes", "q", "bytes", "Python heap traced by tracemalloc (-1 when it is off)"),
    Column("heap_peak_bytes", "q", "bytes", "peak traced heap (-1 when tracemalloc is off)"),
    Column("connections", "q", "connections", "open connections"),
    Column("bytes_per_connection", "d", "bytes",
           "growth since the recorder started (heap if traced, else RSS) divided by the "
           "growth in connections; NaN while connections did not grow"),
)

LATENCY = (
    T,
    Column("channel", "O", "", "channel of the message"),
    Column("latency_ms", "d", "ms",
           "client receive time minus the server's send stamp (ts): encode, queue, "
           "write, network and client parsing"),
)

EVENTS_DOC = ("cumulative hub counters (HubStats), one column per counter, sampled with "
              "the connections; units: events")

TABLES: dict[str, tuple[Column, ...]] = {
    "broadcasts": BROADCASTS,
    "connections": CONNECTIONS,
    "channels": CHANNELS,
    "memory": MEMORY,
    "latency": LATENCY,
}
"""The recorder's tables (name -> columns), as docs/metrics.md lists them."""

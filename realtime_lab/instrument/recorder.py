"""The Recorder: broadcast, connection, channel, memory, latency and event metrics.

``rec = server.record()`` attaches a recorder to a running server's hub. The hub
calls :meth:`Recorder.begin` and :meth:`Recorder.end` around each broadcast (one
probe, a handful of array stores per publish, nothing per subscriber); a timer on
the event loop samples connections, channels, memory and the hub counters every
``interval`` seconds. Everything lands in preallocated ring buffers
(:mod:`realtime_lab.instrument.ring`) and becomes pandas DataFrames with
:meth:`Recorder.to_frame`. docs/metrics.md documents every column.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime_lab.instrument import frames, memory, schema
from realtime_lab.instrument.ring import Column, RingTable, Symbols

if TYPE_CHECKING:
    import pandas as pd

    from realtime_lab.core.channels import Channel
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.session import Session

NAN = math.nan


class Recorder:
    """Records a hub's metrics into ring buffers.

    Args:
        hub: the hub to observe (``server.hub``).
        capacity: rows kept per table before the oldest are overwritten.
        interval: seconds between samples of connections, channels, memory and counters.
        timestamps: stamp each channel message with ``"ts"`` (server wall-clock send
            time, seconds since the epoch) so clients can measure delivery latency.
        tracemalloc: start tracemalloc (if not already tracing) so memory samples
            include the Python heap and :meth:`top_allocations` works. It slows
            allocation-heavy code; leave it off when measuring CPU.
        max_connections_per_sample: connections sampled per tick (in rotation
            when there are more).
    """

    def __init__(self, hub: Hub, *, capacity: int = 100_000, interval: float = 0.5,
                 timestamps: bool = True, tracemalloc: bool = False,
                 max_connections_per_sample: int = 2000) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self.hub = hub
        self.interval = interval
        self.stamp = timestamps
        self.trace_heap = tracemalloc
        self.max_connections_per_sample = max_connections_per_sample
        self.clock: Callable[[], float] = time.perf_counter
        self.t0 = self.clock()
        self.wall0 = time.time()
        self.running = False
        self._started_tracemalloc = False
        self._timer: asyncio.TimerHandle | None = None
        self._rotation = 0
        self._base: tuple[int, int, int] | None = None  # rss, heap, connections at start
        self.counter_names = tuple(f.name for f in dataclasses.fields(hub.stats))
        events = (schema.T, *(Column(n, "q", "events", schema.EVENTS_DOC)
                              for n in self.counter_names))
        small = max(1000, capacity // 10)
        self.symbols = sym = Symbols()
        self.tables: dict[str, RingTable] = {
            "broadcasts": RingTable("broadcasts", schema.BROADCASTS, capacity, sym),
            "connections": RingTable("connections", schema.CONNECTIONS, capacity, sym),
            "channels": RingTable("channels", schema.CHANNELS, capacity, sym),
            "memory": RingTable("memory", schema.MEMORY, small, sym),
            "latency": RingTable("latency", schema.LATENCY, capacity, sym),
            "events": RingTable("events", events, small, sym),
        }
        self._code = sym.code
        b = self.tables["broadcasts"].data
        self._b = self.tables["broadcasts"]
        self._b_cols = (b["t"], b["channel"], b["fanout"], b["delivered"], b["drops"],
                        b["payload_bytes"], b["encode_us"], b["enqueue_us"])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Recorder:
        """Attach to the hub and start sampling on the running loop (if any)."""
        if self.running:
            return self
        current = getattr(self.hub, "recorder", None)
        if current is not None and current is not self:
            raise RuntimeError("this hub already has a recorder; stop it first (rec.stop())")
        if self.trace_heap and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracemalloc = True
        heap, _ = memory.heap_bytes()
        self._base = (memory.rss_bytes(), heap, len(self.hub.sessions))
        self.hub.recorder = self
        self.running = True
        self.sample()
        self._schedule()
        return self

    def stop(self) -> Recorder:
        """Detach from the hub, take a last sample and stop the timer (idempotent)."""
        if not self.running:
            return self
        self.sample()
        self.running = False
        if self.hub.recorder is self:
            self.hub.recorder = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._started_tracemalloc:
            tracemalloc.stop()
            self._started_tracemalloc = False
        return self

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: call sample() yourself
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        if not self.running:
            return
        self.sample()
        self._schedule()

    def now(self) -> float:
        """Seconds since the recorder was created (the ``t`` column)."""
        return self.clock() - self.t0

    # ------------------------------------------------------------------ hub probe

    def begin(self, message: dict[str, Any]) -> float:
        """Called by the hub before encoding a broadcast; stamps ``ts`` when enabled."""
        if self.stamp:
            message["ts"] = time.time()
        return self.clock()

    def end(self, channel: Channel, frame_bytes: int, delivered: int, t0: float, t1: float,
            exclude: Session | None, *, fanout: int) -> None:
        """Called by the hub after fan-out: one row in ``broadcasts`` (``fanout``: the
        local subscribers when it began, the excluded sender among them)."""
        t2 = self.clock()
        excluded = 1 if exclude is not None else 0
        i = self._b.next_index()
        ct, cch, cfan, cdel, cdrop, cbytes, cenc, cenq = self._b_cols
        ct[i] = t2 - self.t0
        cch[i] = self._code(channel.name)
        cfan[i] = fanout
        cdel[i] = delivered
        cdrop[i] = fanout - excluded - delivered
        cbytes[i] = frame_bytes
        cenc[i] = (t1 - t0) * 1e6
        cenq[i] = (t2 - t1) * 1e6

    # ------------------------------------------------------------------ latency

    def observe_latency(self, channel: str, sent_ts: float, received_ts: float) -> None:
        """Record one delivery latency from a client (times in epoch seconds)."""
        self.tables["latency"].append(self.now(), channel, (received_ts - sent_ts) * 1e3)

    def latency_ms(self, channel: str, values_ms: Sequence[float]) -> None:
        """Record latencies (ms) measured elsewhere: the ``receipts`` the lab's clients
        send (the hub calls this), or values from a load-generator process."""
        t = self.now()
        table = self.tables["latency"]
        for value in values_ms:
            table.append(t, channel, float(value))

    def latencies_since(self, mark: int) -> tuple[int, list[float]]:
        """Latencies (ms) recorded after ``mark`` (a previous return value; 0 at first),
        oldest first, and the new mark: how a live view reads the table incrementally."""
        table = self.tables["latency"]
        count = table.count
        new = min(count - mark, table.capacity) if count > mark else 0
        column = table.data["latency_ms"]
        values = [column[(count - new + i) % table.capacity] for i in range(new)]
        return count, values

    def observe(self, message: dict[str, Any], received_at: float | None = None) -> float | None:
        """Record the latency of a channel message a client received; return it in ms.

        Messages without the server's ``ts`` stamp are ignored (None).
        """
        sent = message.get("ts")
        if not isinstance(sent, int | float):
            return None
        latency = ((time.time() if received_at is None else received_at) - sent) * 1e3
        self.tables["latency"].append(self.now(), message.get("channel", ""), latency)
        return latency

    # ------------------------------------------------------------------ sampling

    def sample(self) -> None:
        """Sample connections, channels, memory and counters once (the timer calls this)."""
        t = self.now()
        hub = self.hub
        self._sample_connections(t)
        ch = self.tables["channels"]
        for channel in list(hub.channels.values()):
            ch.append(t, channel.name, len(channel.subscribers), len(channel.members),
                      channel.messages)
        stats = hub.stats
        self.tables["events"].append(t, *(int(getattr(stats, n)) for n in self.counter_names))
        self._sample_memory(t)

    def _sample_connections(self, t: float) -> None:
        sessions = list(self.hub.sessions.values())
        limit = self.max_connections_per_sample
        if len(sessions) > limit:
            start = self._rotation % len(sessions)
            self._rotation = start + limit
            sessions = (sessions[start:] + sessions[:start])[:limit]
        table = self.tables["connections"]
        d = table.data
        ct, cs, cu, cqf, cqb = d["t"], d["session"], d["user"], d["queue_frames"], d["queue_bytes"]
        cmi, cmo, cbi, cbo, crtt = (d["messages_in"], d["messages_out"], d["bytes_in"],
                                    d["bytes_out"], d["rtt_ms"])
        code = self._code
        for s in sessions:
            i = table.next_index()
            st = s.stats
            ct[i] = t
            cs[i] = code(s.id)
            cu[i] = code(s.user)
            cqf[i] = len(s.pending)
            try:
                buffered = s.port.buffered_bytes()
            except Exception:  # noqa: BLE001 - a closing transport may fail here
                buffered = 0
            cqb[i] = s.pending_bytes + buffered
            cmi[i] = st.messages_in
            cmo[i] = st.messages_out
            cbi[i] = st.bytes_in
            cbo[i] = st.bytes_out
            crtt[i] = NAN if s.rtt is None else s.rtt * 1e3

    def _sample_memory(self, t: float) -> None:
        rss = memory.rss_bytes()
        heap, peak = memory.heap_bytes()
        conns = len(self.hub.sessions)
        per_conn = NAN
        if self._base is not None:
            rss0, heap0, conns0 = self._base
            grown = conns - conns0
            if grown > 0:
                per_conn = ((heap - heap0) if heap >= 0 and heap0 >= 0 else (rss - rss0)) / grown
        self.tables["memory"].append(t, rss, heap, peak, conns, per_conn)

    # ------------------------------------------------------------------ results

    def top_allocations(self, limit: int = 10) -> pd.DataFrame:
        """The source lines holding the most traced memory right now (needs tracemalloc)."""
        pd = frames.pandas()
        return pd.DataFrame(memory.top_allocations(limit),
                            columns=["file", "line", "size_bytes", "count"])

    def to_frame(self, table: str) -> pd.DataFrame:
        """One table as a DataFrame: ``broadcasts``, ``connections``, ``channels``,
        ``memory``, ``latency`` or ``events`` (columns in docs/metrics.md)."""
        if table not in self.tables:
            raise KeyError(f"unknown table {table!r}; choose from {', '.join(self.tables)}")
        return frames.to_frame(self.tables[table], self.wall0)

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every table as a DataFrame."""
        return {name: self.to_frame(name) for name in self.tables}

    def summary(self) -> dict[str, Any]:
        """Rows recorded per table, overwritten rows, and the recording span."""
        return {
            "started_at": self.wall0,
            "duration_s": round(self.now(), 3),
            "running": self.running,
            "rows": {n: len(t) for n, t in self.tables.items()},
            "overwritten": {n: t.overwritten for n, t in self.tables.items()},
        }

    def save(self, directory: str | Path | None = None, *,
             format: str = "csv") -> dict[str, Path]:
        """Write every table and ``meta.json`` into one run folder; return the paths.

        ``format``: ``"csv"`` (default) or ``"parquet"`` (needs pyarrow), never chosen
        for you. ``directory`` defaults to a new ``data/runs/run-YYYYmmdd-HHMMSS``; an
        earlier run folder given again is replaced whole (no stale files). Read it
        back with :func:`realtime_lab.instrument.load`.
        """
        folder = frames.new_run_folder() if directory is None else directory
        return frames.save(self.frames(), folder, meta=self.summary(), format=format)

    def __repr__(self) -> str:
        rows = ", ".join(f"{n}={len(t)}" for n, t in self.tables.items())
        return f"<Recorder {'running' if self.running else 'stopped'} {rows}>"

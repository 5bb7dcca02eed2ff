"""Process plumbing shared by the Python server modules: ready signal, stop, fd limit,
and an event-loop lag probe.

The probe (:class:`LagProbe`) is a timer on the server's own loop that fires
every :data:`LAG_PERIOD` seconds and records how late each firing was. Firings
later than :data:`LAG_RECORD` are kept as ``(time.monotonic_ns(), lateness_ns)``
pairs; when the server stops it writes them (and the largest lateness of its
whole life) as JSON to ``--lag-file``. ``time.monotonic_ns()`` is
CLOCK_MONOTONIC, system-wide on Linux, so the runner can keep only the
firings inside the load generator's measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

Stop = Callable[[], Awaitable[None]]
Start = Callable[[argparse.Namespace], Awaitable[tuple[int, Stop]]]
#: What a server reports on a ``stats`` line on stdin (its counters; see ``server_main``).
Report = Callable[[], dict[str, object]]

HOST = "127.0.0.1"
LAG_PERIOD = 0.002  # seconds between probe firings
LAG_RECORD = 1_000_000  # ns: firings later than this are kept with their time


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise the soft open-files limit towards ``wanted`` (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class LagProbe:
    """A timer chain on the running loop recording how late each firing was."""

    def __init__(self, period: float = LAG_PERIOD) -> None:
        self.period = period
        self.loop = asyncio.get_running_loop()
        self.events: list[tuple[int, int]] = []
        self.max_ns = 0
        self.firings = 0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self.loop.time() + self.period
        self._handle = self.loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        late = int((now - self._due) * 1e9)
        self.firings += 1
        if late > self.max_ns:
            self.max_ns = late
        if late > LAG_RECORD:
            self.events.append((time.monotonic_ns(), late))
        self._due = now + self.period
        self._handle = self.loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"period_ms": self.period * 1e3, "firings": self.firings,
                                    "max_ms": self.max_ns / 1e6, "events": self.events}))


def server_main(start: Start, argv: list[str] | None = None) -> None:
    """Parse the common options, start the server, print ``PORT n``, wait for stop."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="stop by itself after this long, whatever happens")
    parser.add_argument("--max-outbound-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--lag-file", type=Path, default=None,
                        help="write the loop-lag probe's record here when stopping")
    parser.add_argument("--port", type=int, default=0,
                        help="port to bind (0: any free one); a server that honours it")
    parser.add_argument("--presence", action="store_true",
                        help="presence on, where the server has it (realtime_lab)")
    parser.add_argument("--serve-defaults", action="store_true",
                        help="the server's own defaults, as `realtime-lab serve` has them "
                             "(realtime_lab: no raised outbound bound, no gc_freeze)")
    args = parser.parse_args(argv)
    args.report = None  # start() may set a Report for ``stats`` lines on stdin
    raise_nofile_limit()
    asyncio.run(_serve(start, args))


async def _serve(start: Start, args: argparse.Namespace) -> None:
    port, stop = await start(args)
    loop = asyncio.get_running_loop()
    probe = LagProbe()
    probe.start()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        try:
            data = os.read(stdin, 4096)
        except OSError:
            data = b""
        if not data:  # EOF: the runner closed our stdin
            loop.remove_reader(stdin)
            done.set()
        for _ in range(data.count(b"stats\n")):  # the runner asks for the counters
            report = args.report() if args.report is not None else {}
            print(f"STATS {json.dumps(report)}", flush=True)

    loop.add_reader(stdin, on_stdin)
    print(f"PORT {port}", flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), args.max_seconds)
    finally:
        probe.stop()
        if args.lag_file is not None:
            with contextlib.suppress(OSError):
                probe.write(args.lag_file)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop(), 10.0)

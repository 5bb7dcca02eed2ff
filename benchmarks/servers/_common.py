"""Process plumbing shared by the server modules: ready signal, stop, fd limit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable

Stop = Callable[[], Awaitable[None]]
Start = Callable[[argparse.Namespace], Awaitable[tuple[int, Stop]]]

HOST = "127.0.0.1"


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise the soft open-files limit towards ``wanted`` (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def server_main(start: Start, argv: list[str] | None = None) -> None:
    """Parse the common options, start the server, print ``PORT n``, wait for stop."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="stop by itself after this long, whatever happens")
    parser.add_argument("--max-outbound-bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(_serve(start, args))


async def _serve(start: Start, args: argparse.Namespace) -> None:
    port, stop = await start(args)
    loop = asyncio.get_running_loop()
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

    loop.add_reader(stdin, on_stdin)
    print(f"PORT {port}", flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), args.max_seconds)
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop(), 10.0)

"""Process memory: resident set size, the traced Python heap, top allocation sites."""

from __future__ import annotations

import os
import resource
import tracemalloc
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process, in bytes.

    Reads /proc/self/statm on Linux; elsewhere falls back to psutil when present,
    then to the peak RSS from getrusage.
    """
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        pass
    try:  # pragma: no cover - non-Linux
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * 1024


def heap_bytes() -> tuple[int, int]:
    """(current, peak) bytes traced by tracemalloc, or (-1, -1) when it is off."""
    if not tracemalloc.is_tracing():
        return -1, -1
    return tracemalloc.get_traced_memory()


def top_allocations(limit: int = 10, *, group_by: str = "lineno") -> list[dict[str, Any]]:
    """The ``limit`` source lines (or files) holding the most traced memory.

    Needs tracemalloc to be tracing (``server.record(tracemalloc=True)`` or
    ``tracemalloc.start()``); raises RuntimeError otherwise.
    """
    if not tracemalloc.is_tracing():
        raise RuntimeError(
            "tracemalloc is not tracing; start the recorder with tracemalloc=True "
            "or call tracemalloc.start() first")
    snapshot = tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<unknown>"),
    ))
    rows: list[dict[str, Any]] = []
    for stat in snapshot.statistics(group_by)[:limit]:
        frame = stat.traceback[0]
        rows.append({"file": frame.filename, "line": frame.lineno,
                     "size_bytes": stat.size, "count": stat.count})
    return rows

"""Instrumentation: record a server's metrics into pandas DataFrames.

``rec = server.record()`` starts a :class:`Recorder`; ``rec.to_frame("broadcasts")``
returns a table; ``rec.save("data/runs/NAME")`` writes them all. docs/metrics.md
lists every table, column, dtype and unit.
"""

from realtime_lab.instrument.frames import load, save
from realtime_lab.instrument.memory import heap_bytes, rss_bytes, top_allocations
from realtime_lab.instrument.recorder import Recorder
from realtime_lab.instrument.ring import Column, RingTable
from realtime_lab.instrument.schema import TABLES

__all__ = [
    "TABLES",
    "Column",
    "Recorder",
    "RingTable",
    "heap_bytes",
    "load",
    "rss_bytes",
    "save",
    "top_allocations",
]

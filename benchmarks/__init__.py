"""Benchmarks of realtime_lab against peer servers (``make bench``).

Each server under test runs in its own OS process (``benchmarks.servers``), the
load comes from another process (``benchmarks.loadgen``), and ``benchmarks.run``
interleaves rounds, reads CPU and RSS from the OS, and writes the report.
"""

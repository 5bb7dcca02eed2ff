"""The join storm (issue 16 point 6): N clients connect and subscribe to one channel.

``python -m benchmarks.join_storm`` (or ``python -m benchmarks.run --scenarios
join-storm``; ``make bench`` runs it with the other scenarios). Each measurement has a
fresh server process and a load client in a process of its own: the Node.js client
``benchmarks/node/join_storm.js`` (the ``ws`` package that ``make bench`` installs, or
Node's own WebSocket). The servers:

* ``realtime_lab presence``: ``realtime-lab serve`` defaults, presence on every
  channel (``presence_channels="*"``); every client rebuilds the member list and the
  storm is over when every list holds all N members, exactly;
* ``realtime_lab no presence``: the same server with ``presence_channels=None``;
* the peers without presence: Node.js ``ws`` and ``websockets`` (benchmarks/servers).

Scenarios, rounds interleaved across servers:

* ``join-N`` (N = 1,000, 5,000, 10,000; ``--sizes``): at most 64 handshakes in flight,
  each client subscribes as soon as it is welcomed. Measured: the time until every
  client is subscribed, until every member list is exact (the storm settled), the
  presence diffs the server queued (``hub.stats.deliveries``: nothing else is
  fanned out in this scenario) and the presence frames the clients received, the
  server's CPU seconds, and its RSS per connection once idle.
* ``reconnect-N`` (realtime_lab, presence on and off; ``--reconnect``, 5,000): the
  crowd settled, the server process is stopped (1001 to every client) and started
  again on the same port; the clients reconnect as realtime_lab's clients do (a
  random first delay up to 0.5 s, then full-jitter backoff from 0.5 s) and subscribe
  again. Measured: the time from the stop until all are back, subscribed, and their
  lists exact; from the new server's start; its CPU and presence diffs.

The processes (the load client, the server's counters) are in
:mod:`benchmarks.join_storm_client`. Prints a Markdown block (docs/performance.md,
"Join storm") and writes the rows as CSV into data/bench/ (``--csv``). ``--smoke``:
20 and 40 clients, 10 in the reconnect storm, one round, the Python servers only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.join_storm_client import (
    load_client,
    node_command,
    server_stats,
    stats_line,
)
from benchmarks.loadgen import cpu_seconds
from benchmarks.run import DATA, Running, code_revision, server_process, source_tree, spec_for
from benchmarks.servers import ServerSpec

PEERS = ("node_ws", "websockets")


@dataclass
class Variant:
    """One server of the run: a spec, with presence or not, from a source tree."""

    name: str
    spec: ServerSpec
    presence: bool
    rev: str | None = None
    src: Path | None = None

    @property
    def lab(self) -> bool:
        """A realtime_lab server (it answers ``stats``; it takes ``--port``)."""
        return self.spec.module == "benchmarks.servers.realtime_lab_server"


@dataclass
class Config:
    """What one join-storm run does (:func:`config` fills it)."""

    servers: list[str] = field(default_factory=lambda: ["realtime_lab", *PEERS])
    sizes: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    rounds: int = 3
    large_rounds: int = 1  # rounds of sizes above 5,000 (the machine is shared)
    reconnect: list[int] = field(default_factory=lambda: [5000])  # reconnect storm sizes
    timeout: float = 300.0  # seconds per phase
    settle: float = 0.5  # seconds before the first RSS reading
    idle_wait: float = 1.0  # seconds after the storm before the RSS reading
    csv_path: Path | None = None
    smoke: bool = False
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class StormRow:
    """One measurement."""

    round: int
    scenario: str
    server: str
    clients: int
    presence: bool
    subscribed_s: float = float("nan")  # storm start -> every client subscribed
    settled_s: float = float("nan")  # storm start -> every list exact (or subscribed)
    down_s: float = float("nan")  # reconnect: the stop -> the new server listening
    back_s: float = float("nan")  # reconnect: the new server listening -> settled
    presence_diffs: float = float("nan")  # the server's fan-out deliveries
    # presence_state / page / diff frames, and all frames, the clients got (a reconnect
    # row: since the crowd first connected, both storms)
    presence_frames: int = 0
    frames: int = 0
    closes: int = 0  # connections closed during the join storm (0 expected)
    bad_members: int = 0
    counts_mode: int = 0  # clients that got a count, not a member list (counts mode)
    server_cpu_s: float = float("nan")
    rss_before: int = 0
    rss_after: int = 0
    bytes_per_connection: float = float("nan")
    load_avg: float = float("nan")
    code: str = ""
    error: str = ""


def _seconds(event: dict[str, Any], key: str, start: int) -> float:
    value = event.get(key)
    return (int(value) - start) / 1e9 if value is not None else float("nan")


def _client_figures(row: StormRow, event: dict[str, Any]) -> None:
    row.presence_frames = event["presence_frames"]
    row.frames = event["frames"]
    row.bad_members = event["bad_members"]
    row.counts_mode = event.get("counts_mode", 0)


# ---------------------------------------------------------------------- measuring


def measure_join(v: Variant, cfg: Config, row: StormRow, node: list[str]) -> None:
    """One join storm of ``row.clients`` on a fresh server."""
    with server_process(v.spec, v.src) as srv:
        proc = psutil.Process(srv.pid)
        time.sleep(cfg.settle)
        row.rss_before = proc.memory_info().rss
        cpu0 = cpu_seconds(proc)
        with load_client(node, srv.port, row.clients, v.presence) as client:
            try:
                event = client.settled(0, cfg.timeout)
            except RuntimeError as exc:  # say what the server saw: slow consumers?
                stats = stats_line(srv) if v.lab else "no stats"
                raise RuntimeError(f"{exc}; server: {stats}") from None
            row.server_cpu_s = cpu_seconds(proc) - cpu0
            start = int(event["phase_start_ns"])
            row.subscribed_s = _seconds(event, "all_subscribed_ns", start)
            row.settled_s = _seconds(event, "settled_ns", start)
            row.closes = event["closes"]
            _client_figures(row, event)
            if v.lab:
                row.presence_diffs = server_stats(srv)["deliveries"]
            time.sleep(cfg.idle_wait)
            row.rss_after = proc.memory_info().rss
    row.bytes_per_connection = (row.rss_after - row.rss_before) / row.clients


def measure_reconnect(v: Variant, cfg: Config, row: StormRow, node: list[str]) -> None:
    """A settled crowd, the server process restarted on its port, the crowd back."""
    first = server_process(v.spec, v.src)
    srv: Running | None = first.__enter__()
    try:
        assert srv is not None
        port = srv.port
        with load_client(node, port, row.clients, v.presence) as client:
            client.settled(0, cfg.timeout)
            stopped = time.monotonic_ns()
            srv = None
            first.__exit__(None, None, None)  # stdin EOF: a graceful stop (1001)
            again = dataclasses.replace(v.spec, args=(*v.spec.args, "--port", str(port)))
            with server_process(again, v.src) as srv2:
                up = time.monotonic_ns()
                proc = psutil.Process(srv2.pid)
                cpu0 = cpu_seconds(proc)
                event = client.settled(1, cfg.timeout)
                row.server_cpu_s = cpu_seconds(proc) - cpu0
                row.down_s = (up - stopped) / 1e9
                row.settled_s = _seconds(event, "settled_ns", stopped)
                row.subscribed_s = _seconds(event, "all_subscribed_ns", stopped)
                row.back_s = _seconds(event, "settled_ns", up)
                _client_figures(row, event)
                row.presence_diffs = server_stats(srv2)["deliveries"]
    finally:
        if srv is not None:
            first.__exit__(*sys.exc_info())


def _attempt(row: StormRow, measure: Callable[..., None], *args: Any) -> None:
    try:
        measure(*args)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        row.error = f"{row.scenario}: {exc}"
    where = f"round {row.round} {row.scenario:<15} {row.server:<28}"
    if row.error:
        print(f"{where} FAILED: {row.error.splitlines()[0][:300]}", file=sys.stderr, flush=True)
    else:
        print(f"{where} settled {row.settled_s:7.2f} s, subscribed {row.subscribed_s:7.2f} s, "
              f"diffs {row.presence_diffs:,.0f}, CPU {row.server_cpu_s:6.2f} s, "
              f"{row.bytes_per_connection / 1000:5.1f} KB/conn, closes {row.closes}",
              file=sys.stderr, flush=True)


def variants(cfg: Config) -> list[Variant]:
    """The servers of the run: each realtime_lab name gives presence on and off."""
    out: list[Variant] = []
    for name in cfg.servers:
        spec = spec_for(name)
        if spec.module == "benchmarks.servers.realtime_lab_server":
            rev = name.partition("@")[2] or None  # realtime_lab@REV: as of REV
            for presence in (True, False):
                args = ("--serve-defaults", *(("--presence",) if presence else ()))
                label = f"{name} {'presence' if presence else 'no presence'}"
                out.append(Variant(label, dataclasses.replace(spec, name=label, args=args),
                                   presence, rev))
        else:
            out.append(Variant(name, spec, False))
    return out


def run(cfg: Config) -> list[StormRow]:
    """Every size, rounds interleaved across servers; then the reconnect storms."""
    node = node_command()
    if isinstance(node, str):
        raise RuntimeError(f"the join storm needs its Node.js load client: {node}")
    rows: list[StormRow] = []
    with contextlib.ExitStack() as stack:
        trees: dict[str, Path | None] = {}
        vs = []
        for v in variants(cfg):
            why = v.spec.unavailable()
            if why is not None:
                cfg.skipped[v.name] = why
                continue
            if v.rev is not None:
                if v.rev not in trees:
                    trees[v.rev] = stack.enter_context(source_tree(v.rev))
                v.src = trees[v.rev]
            vs.append(v)
        for rnd in range(1, cfg.rounds + 1):
            for n in cfg.sizes:
                if n > 5000 and rnd > cfg.large_rounds:
                    continue
                for v in vs:
                    row = _row(rnd, f"join-{n}", v, n)
                    _attempt(row, measure_join, v, cfg, row, node)
                    rows.append(row)
        for rnd in range(1, cfg.rounds + 1):
            for n in cfg.reconnect:
                for v in (v for v in vs if v.lab):
                    row = _row(rnd, f"reconnect-{n}", v, n)
                    _attempt(row, measure_reconnect, v, cfg, row, node)
                    rows.append(row)
    return rows


def _row(rnd: int, scenario: str, v: Variant, n: int) -> StormRow:
    return StormRow(rnd, scenario, v.name, n, v.presence, load_avg=os.getloadavg()[0],
                    code=code_revision(v.rev))


# ---------------------------------------------------------------------- report


def _med(rows: list[StormRow], get: Callable[[StormRow], float]) -> float:
    values = [get(r) for r in rows if not r.error]
    return statistics.median(values) if values else float("nan")


def _cell(value: float, spec: str) -> str:
    return "—" if value != value else format(value, spec)


def render(rows: list[StormRow], cfg: Config, command: str) -> str:
    """The Markdown block: one table for the join storms, one for the reconnect storms."""
    servers = list(dict.fromkeys(r.server for r in rows))
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    out = [f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}`; "
           f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end. "
           "Medians of the rounds (runs in brackets); KB = 1000 bytes."]
    for name, why in cfg.skipped.items():
        out.append(f"{name} skipped: {why}.")
    joins = [s for s in scenarios if s.startswith("join-")]
    if joins:
        out += ["", "| scenario | server | all subscribed (s) | settled, lists exact (s) | "
                "presence diffs (server) | presence frames (clients) | server CPU (s) | "
                "RSS / connection (KB) | closes | counts mode |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc in joins:
        for server in servers:
            rs = [r for r in rows if r.scenario == sc and r.server == server]
            if not rs:
                continue
            ok = [r for r in rs if not r.error]
            failed = "" if len(ok) == len(rs) else f" ({len(rs) - len(ok)} failed)"
            out.append(
                f"| {sc} | {server} ({len(ok)}){failed} | "
                f"{_cell(_med(rs, lambda r: r.subscribed_s), '.2f')} | "
                f"{_cell(_med(rs, lambda r: r.settled_s), '.2f')} | "
                f"{_cell(_med(rs, lambda r: r.presence_diffs), ',.0f')} | "
                f"{_cell(_med(rs, lambda r: float(r.presence_frames)), ',.0f')} | "
                f"{_cell(_med(rs, lambda r: r.server_cpu_s), '.2f')} | "
                f"{_cell(_med(rs, lambda r: r.bytes_per_connection / 1000), '.1f')} | "
                f"{_cell(_med(rs, lambda r: float(r.closes)), '.0f')} | "
                f"{_cell(_med(rs, lambda r: float(r.counts_mode)), '.0f')} |")
    reconnects = [s for s in scenarios if s.startswith("reconnect-")]
    if reconnects:
        out += ["", "| scenario | server | down (s) | back after the stop (s) | "
                "back after the restart (s) | presence diffs | server CPU (s) |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for sc in reconnects:
            for server in servers:
                rs = [r for r in rows if r.scenario == sc and r.server == server]
                if rs:
                    good = len([r for r in rs if not r.error])
                    out.append(
                        f"| {sc} | {server} ({good}) | {_cell(_med(rs, lambda r: r.down_s), '.2f')}"
                        f" | {_cell(_med(rs, lambda r: r.settled_s), '.2f')} | "
                        f"{_cell(_med(rs, lambda r: r.back_s), '.2f')} | "
                        f"{_cell(_med(rs, lambda r: r.presence_diffs), ',.0f')} | "
                        f"{_cell(_med(rs, lambda r: r.server_cpu_s), '.2f')} |")
    failures = [r for r in rows if r.error]
    if failures:
        out += ["", *(f"- round {r.round} {r.server}: {r.error[:300]}" for r in failures)]
    return "\n".join(out)


def write_csv(rows: list[StormRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in dataclasses.fields(StormRow)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks.join_storm",
                                description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="20 and 40 clients, 10 reconnecting, one round, Python servers only")
    p.add_argument("--servers", default=None,
                   help="comma-separated: realtime_lab (presence on and off), "
                        "realtime_lab@REV, node_ws, websockets")
    p.add_argument("--sizes", default=None,
                   help="clients per join storm (default 1000,5000,10000; 0: none)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--large-rounds", type=int, default=1,
                   help="rounds of the sizes above 5,000 (default 1)")
    p.add_argument("--reconnect", default=None,
                   help="clients per reconnect storm (default 5000; 0: none)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per phase")
    p.add_argument("--csv", type=Path, default=None)
    a = p.parse_args(argv)
    return config(servers=a.servers.split(",") if a.servers else None,
                  sizes=_sizes(a.sizes), rounds=a.rounds, large_rounds=a.large_rounds,
                  reconnect=_sizes(a.reconnect),
                  timeout=a.timeout, csv_path=a.csv, smoke=a.smoke)


def _sizes(text: str | None) -> list[int] | None:
    """``1000,5000`` -> [1000, 5000]; ``0`` -> []; None -> None (the default)."""
    if text is None:
        return None
    return [n for n in (int(x) for x in text.split(",") if x) if n > 0]


def config(*, servers: list[str] | None = None, sizes: list[int] | None = None,
           rounds: int | None = None, large_rounds: int = 1,
           reconnect: list[int] | None = None,
           timeout: float = 300.0, csv_path: Path | None = None,
           smoke: bool = False) -> Config:
    """A run's configuration; ``smoke`` makes every unset figure tiny."""
    cfg = Config(
        servers=servers or (["realtime_lab", "websockets"] if smoke
                            else ["realtime_lab", *PEERS]),
        sizes=sizes if sizes is not None else ([20, 40] if smoke else [1000, 5000, 10000]),
        rounds=rounds or (1 if smoke else 3), large_rounds=large_rounds,
        reconnect=reconnect if reconnect is not None else ([10] if smoke else [5000]),
        timeout=min(timeout, 60.0) if smoke else timeout,
        settle=0.1 if smoke else 0.5, idle_wait=0.1 if smoke else 1.0,
        csv_path=csv_path, smoke=smoke)
    if cfg.csv_path is None and not smoke:
        cfg.csv_path = DATA / f"join_storm_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M}.csv"
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Run, print, write the CSV. Exit status 1 when a measurement failed."""
    cfg = parse_args(argv)
    command = "python -m benchmarks.join_storm" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    return report(cfg, command)


def report(cfg: Config, command: str) -> int:
    """Run ``cfg``, print its block, write its CSV; 1 when a measurement failed."""
    rows = run(cfg)
    print(render(rows, cfg, command))
    if cfg.csv_path is not None:
        write_csv(rows, cfg.csv_path)
        print(f"raw rows: {cfg.csv_path}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

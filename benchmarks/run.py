"""Benchmark runner for issue 7: ``python -m benchmarks.run`` (``make bench``).

Scenarios (``--scenarios``), each measurement on a fresh server process, rounds
interleaved across servers (A B C D A B C D ...). A server named
``realtime_lab@REV`` is realtime_lab as of the git revision REV, beside the
working tree's ``realtime_lab`` in the same interleaved run (before/after):
``--servers realtime_lab,realtime_lab@baseline-wave2``.

- ``burst``: N subscribers (``--sizes``, default 1000 and 5000) on one channel,
  one publisher sends 200 x 100-byte messages back to back;
- ``idle``: server RSS growth over 5000 idle connections;
- ``large``: realtime_lab alone, 10,000 subscribers get a short burst;
- ``paced``: after the burst rounds, a paced publisher at half of realtime_lab's
  median burst deliveries/s at the smallest size; delivery latency;
- ``join-storm`` (issue 16, ``benchmarks/join_storm.py``, also runnable alone with
  ``python -m benchmarks.join_storm``): 1,000 / 5,000 / 10,000 clients connect and
  subscribe to one channel, realtime_lab with presence on and off and the peers
  without; then a reconnect storm of 5,000 after a server restart. Not in
  ``--smoke`` unless named (its load client is Node.js; tests/benchmarks has its
  own smoke test).

It prints the tables, writes the raw rows as CSV into data/bench/ and the
tables into docs/performance.md (``benchmarks/report.py``). ``--smoke`` runs a
tiny version (Python peers only, a few seconds, no docs written).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import selectors
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.servers import PYTHON_SERVERS, SERVERS, ServerSpec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
DATA = ROOT / "data" / "bench"
SCENARIOS = ("burst", "idle", "large", "paced", "join-storm")
#: The scenarios of the issue 7 report (the join storm reports on its own).
ISSUE7 = ("burst", "idle", "large", "paced")
#: The servers the join storm runs (realtime_lab, also @REV, gives presence on and off).
JOIN_STORM_SERVERS = ("realtime_lab", "node_ws", "websockets")


@dataclass
class Config:
    """What one benchmark run does."""

    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    sizes: list[int] = field(default_factory=lambda: [1000, 5000])
    messages: int = 200
    size: int = 100
    idle: int = 5000
    large: int = 10000
    large_messages: int = 10
    large_servers: list[str] = field(default_factory=lambda: ["realtime_lab"])
    rounds: int = 3
    paced_rate: float = 0.0  # deliveries/s; 0: half of realtime_lab's burst median
    paced_interval: float = 0.0  # seconds; overrides paced_rate when > 0
    paced_seconds: float = 1.0
    paced_grace: float = 20.0  # seconds after the last paced publish before it times out
    paced_messages: tuple[int, int] = (50, 4000)  # bounds on the paced message count
    sample_every: int = 10
    settle: float = 0.5
    timeout: float = 180.0
    csv_path: Path | None = None
    write_docs: bool = True
    smoke: bool = False
    ref: str | None = None
    code: str = ""  # the measured revision, resolved once when the run starts
    codes: dict[str, str] = field(default_factory=dict)  # server -> its revision
    skipped: dict[str, str] = field(default_factory=dict)  # server -> why it did not run


@dataclass
class Row:
    """One measurement: one server, one scenario, one round."""

    round: int
    scenario: str
    server: str
    subscribers: int = 0
    messages: int = 0
    size: int = 0
    interval: float = 0.0
    expected: int = 0
    received: int = 0
    lost: int = 0
    timed_out: bool = False
    seconds: float = 0.0
    deliveries_per_s: float = float("nan")
    offered_per_s: float = float("nan")
    server_cpu_s: float = 0.0
    server_us_per_delivery: float = float("nan")
    server_cpu_ticks_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    loadgen_cpu_share: float = float("nan")
    loadgen_us_per_delivery: float = float("nan")
    frames_per_read: float = float("nan")
    min_per_client: int = 0
    max_per_client: int = 0
    latency_samples: int = 0
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    latency_max_ms: float = float("nan")
    loop_lag_max_ms: float = float("nan")
    loop_lag_life_ms: float = float("nan")
    rss_before: int = 0
    rss_after: int = 0
    connections: int = 0
    bytes_per_connection: float = float("nan")
    load_avg: float = float("nan")  # the machine's 1-minute load average when it started
    code: str = ""
    error: str = ""


# ---------------------------------------------------------------------- processes


def spec_for(name: str) -> ServerSpec:
    """The spec of a server name; ``realtime_lab@REV`` is realtime_lab at a git revision."""
    base, at, rev = name.partition("@")
    spec = SERVERS[base]
    if not at:
        return spec
    if base != "realtime_lab" or not rev:
        raise KeyError(name)
    return dataclasses.replace(spec, name=name,
                               description=f"{spec.description}, as of {rev}")


def revision_of(name: str, cfg: Config) -> str | None:
    """The git revision a server's realtime_lab comes from (None: the working tree)."""
    base, at, rev = name.partition("@")
    if at:
        return rev
    return cfg.ref if base == "realtime_lab" else None


@contextlib.contextmanager
def source_tree(ref: str | None) -> Iterator[Path | None]:
    """With a git ``ref``, export its ``realtime_lab/`` into a temporary directory.

    Servers then import that snapshot instead of the working tree, so a run
    measures a known revision while the working tree is being edited.
    """
    if ref is None:
        yield None
        return
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "--", "realtime_lab"],
                             cwd=ROOT, capture_output=True, timeout=60, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=False)
    return done.stdout.strip()


def code_revision(ref: str | None) -> str:
    """The measured revision: ``ref``'s commit, or HEAD and a note for a modified tree."""
    commit = _git("rev-parse", "--short", f"{ref or 'HEAD'}^{{commit}}") or "unknown"
    if ref is None and _git("status", "--porcelain", "--", "realtime_lab"):
        commit += " + uncommitted changes in realtime_lab/"
    return commit


@dataclass
class Running:
    """A started server: its pid, port, and (once stopped) its loop-lag record; ``proc``
    (its stdin and stdout) for a scenario that talks to it (benchmarks/join_storm.py)."""

    pid: int
    port: int
    lag: dict[str, Any] | None = None
    proc: subprocess.Popen[bytes] | None = None


@contextlib.contextmanager
def server_process(spec: ServerSpec, src: Path | None = None,
                   timeout: float = 20.0) -> Iterator[Running]:
    """Start a server; yield it; always stop it (stdin EOF, then SIGTERM, SIGKILL).

    With ``src`` (see :func:`source_tree`) a Python server runs from that
    directory, so ``import realtime_lab`` finds the snapshot before the working tree.
    """
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    with tempfile.TemporaryDirectory(prefix="rl-bench-srv-") as tmp, \
            tempfile.TemporaryFile() as errors:
        lag_file = Path(tmp) / "lag.json"
        proc = subprocess.Popen(
            [*spec.command(), "--lag-file", str(lag_file)], cwd=src or ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
        )
        try:
            assert proc.stdout is not None
            port = _read_port(proc, proc.stdout, timeout)
            if port is None:
                raise RuntimeError(f"{spec.name} did not report its port within {timeout}s")
            running = Running(proc.pid, port, proc=proc)
            yield running
        except Exception as exc:
            errors.seek(0)
            tail = errors.read()[-1500:].decode(errors="replace")
            raise RuntimeError(f"{exc}\n--- {spec.name} stderr (tail) ---\n{tail}") from exc
        finally:
            _stop(proc)
        with contextlib.suppress(OSError, ValueError):
            running.lag = json.loads(lag_file.read_text())


def _read_port(proc: subprocess.Popen[bytes], stdout: IO[bytes], timeout: float) -> int | None:
    """Wait (bounded) for the ``PORT n`` line a server prints when it is ready."""
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and proc.poll() is None:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(stdout.fileno(), 256)
            if not chunk:
                return None
            line += chunk
            if b"\n" in line:
                first = line.split(b"\n", 1)[0].decode(errors="replace").split()
                if len(first) == 2 and first[0] == "PORT":
                    return int(first[1])
                return None
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close stdin (the stop signal), then escalate to SIGTERM and SIGKILL."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    for action in (None, proc.terminate, proc.kill):
        if action is not None:
            with contextlib.suppress(OSError):
                action()
        try:
            proc.wait(timeout=10.0)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout is not None:
        proc.stdout.close()


def run_loadgen(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``benchmarks.loadgen`` in its own process; return its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.loadgen", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout, check=False)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def loop_lag(record: dict[str, Any] | None, start_ns: int, end_ns: int) -> tuple[float, float]:
    """(max lateness in ms of probe firings overlapping [start, end], lifetime max in ms).

    Only firings later than 1 ms are recorded with their time, so a window with
    none of them reports min(lifetime max, 1.0). NaN when the server wrote no record.
    """
    if record is None:
        return float("nan"), float("nan")
    life = float(record["max_ms"])
    inside = [late for at, late in record["events"] if at >= start_ns and at - late <= end_ns]
    return (max(inside) / 1e6 if inside else min(life, 1.0)), life


# ---------------------------------------------------------------------- measuring

_FANOUT_FIELDS = ("subscribers", "messages", "size", "interval", "expected", "received", "lost",
                  "timed_out", "seconds", "deliveries_per_s", "offered_per_s", "server_cpu_s",
                  "server_us_per_delivery", "server_cpu_ticks_s", "loadgen_cpu_s",
                  "loadgen_cpu_share", "frames_per_read", "min_per_client", "max_per_client",
                  "latency_samples", "latency_p50_ms", "latency_p99_ms", "latency_max_ms")


def measure_fanout(spec: ServerSpec, cfg: Config, row: Row, src: Path | None) -> None:
    """A burst (``row.interval`` 0) or a paced run: deliveries, loss, CPU, latency, lag."""
    deliver = cfg.timeout
    if row.interval > 0:  # a peer that cannot keep up with the paced rate stops here
        deliver = min(cfg.timeout, row.messages * row.interval + cfg.paced_grace)
    with server_process(spec, src) as srv:
        result = run_loadgen(
            ["fanout", "--port", str(srv.port), "--server-pid", str(srv.pid),
             "--dialect", spec.dialect, "--subscribers", str(row.subscribers),
             "--messages", str(row.messages), "--size", str(cfg.size),
             "--interval", str(row.interval), "--sample-every", str(cfg.sample_every),
             "--settle", str(cfg.settle), "--timeout", str(cfg.timeout),
             "--deliver-timeout", str(deliver)],
            timeout=3 * cfg.timeout + 30)
    for name in _FANOUT_FIELDS:
        setattr(row, name, result[name])
    row.loadgen_us_per_delivery = (row.loadgen_cpu_s / row.received * 1e6 if row.received
                                   else float("nan"))
    row.rss_before, row.rss_after = result["rss_before_connect"], result["rss_subscribed"]
    row.connections = row.subscribers + 1
    row.bytes_per_connection = (row.rss_after - row.rss_before) / row.connections
    row.loop_lag_max_ms, row.loop_lag_life_ms = loop_lag(
        srv.lag, result["window_start_ns"], result["window_end_ns"])


def measure_idle(spec: ServerSpec, cfg: Config, row: Row, src: Path | None) -> None:
    """RSS growth of a fresh server over ``cfg.idle`` idle connections."""
    with server_process(spec, src) as srv:
        result = run_loadgen(
            ["idle", "--port", str(srv.port), "--server-pid", str(srv.pid),
             "--dialect", spec.dialect, "--idle", str(cfg.idle),
             "--settle", str(cfg.settle), "--timeout", str(cfg.timeout)],
            timeout=2 * cfg.timeout + 30)
    row.connections = result["idle_connections"]
    row.rss_before = result["rss_before"]
    row.rss_after = result["rss_after"]
    row.bytes_per_connection = result["bytes_per_connection"]
    _, row.loop_lag_life_ms = loop_lag(srv.lag, 0, 0)


def _new_row(cfg: Config, rnd: int, scenario: str, server: str, subscribers: int = 0,
             messages: int = 0, interval: float = 0.0) -> Row:
    return Row(rnd, scenario, server, subscribers=subscribers, messages=messages,
               size=cfg.size, interval=interval, load_avg=os.getloadavg()[0],
               code=cfg.codes.get(server, cfg.code))


def paced_plan(cfg: Config, rows: list[Row]) -> tuple[int, float, int]:
    """(subscribers, interval s, messages) of the paced run.

    The rate is half of realtime_lab's median burst deliveries/s at the smallest
    size in this run, unless ``--paced-rate`` or ``--interval`` fixes it.
    """
    n = min(cfg.sizes)
    interval = cfg.paced_interval
    if interval <= 0:
        rate = cfg.paced_rate
        if rate <= 0:
            lab = [r.deliveries_per_s for r in rows
                   if r.server == "realtime_lab" and r.scenario == f"burst-{n}" and r.received]
            if not lab:
                raise RuntimeError("no realtime_lab burst to derive the paced rate from; "
                                   "pass --paced-rate or --interval")
            rate = statistics.median(lab) / 2
        interval = n / rate
    low, high = cfg.paced_messages
    messages = int(min(high, max(low, round(cfg.paced_seconds / interval))))
    return n, interval, messages


def run_benchmark(cfg: Config) -> list[Row]:
    """All scenarios; within each, rounds interleaved across servers."""
    rows: list[Row] = []
    if cfg.ref is not None:  # pin the commit now: other people may commit during the run
        cfg.ref = _git("rev-parse", f"{cfg.ref}^{{commit}}") or cfg.ref
    cfg.code = code_revision(cfg.ref)
    specs = [spec_for(name) for name in cfg.servers if name not in cfg.skipped]
    with contextlib.ExitStack() as stack:
        trees: dict[str | None, Path | None] = {}
        srcs: dict[str, Path | None] = {}
        for spec in specs:
            rev = revision_of(spec.name, cfg)
            if rev is not None and rev not in trees:
                commit = _git("rev-parse", f"{rev}^{{commit}}") or rev
                trees[rev] = stack.enter_context(source_tree(commit))
                cfg.codes[spec.name] = code_revision(commit)
            srcs[spec.name] = trees.get(rev)
        for rnd in range(1, cfg.rounds + 1):
            if "burst" in cfg.scenarios:
                for n in cfg.sizes:
                    for spec in specs:
                        rows.append(_fanout_row(cfg, rnd, f"burst-{n}", spec, srcs[spec.name],
                                                n, cfg.messages, 0.0))
            if "idle" in cfg.scenarios and cfg.idle > 0:
                for spec in specs:
                    row = _new_row(cfg, rnd, f"idle-{cfg.idle}", spec.name)
                    if _attempt(row, measure_idle, spec, cfg, srcs[spec.name]):
                        _progress(f"round {rnd} {row.scenario:<11} {spec.name:<13} "
                                  f"{row.bytes_per_connection / 1000:6.1f} KB/connection")
                    rows.append(row)
            if "large" in cfg.scenarios and cfg.large > 0:
                for spec in (s for s in specs
                             if s.name.partition("@")[0] in cfg.large_servers):
                    rows.append(_fanout_row(cfg, rnd, f"large-{cfg.large}", spec,
                                            srcs[spec.name], cfg.large, cfg.large_messages,
                                            0.0))
        if "paced" in cfg.scenarios:
            try:
                n, interval, messages = paced_plan(cfg, rows)
            except RuntimeError as exc:
                _progress(f"paced run skipped: {exc}")
                return rows
            _progress(f"paced: {n} subscribers, one publish every {interval * 1e3:.2f} ms "
                      f"({n / interval:,.0f} deliveries/s), {messages} messages")
            for rnd in range(1, cfg.rounds + 1):
                for spec in specs:
                    rows.append(_fanout_row(cfg, rnd, f"paced-{n}", spec, srcs[spec.name], n,
                                            messages, interval))
    return rows


def _fanout_row(cfg: Config, rnd: int, scenario: str, spec: ServerSpec, src: Path | None,
                n: int, messages: int, interval: float) -> Row:
    row = _new_row(cfg, rnd, scenario, spec.name, n, messages, interval)
    if _attempt(row, measure_fanout, spec, cfg, src):
        extra = (f", p99 {row.latency_p99_ms:.1f} ms" if interval > 0 else "")
        _progress(f"round {rnd} {scenario:<11} {spec.name:<13} "
                  f"{row.server_us_per_delivery:7.2f} us/delivery, lost {row.lost}, "
                  f"{row.deliveries_per_s:10,.0f} deliveries/s, lag {row.loop_lag_max_ms:.1f} ms, "
                  f"loadgen CPU {row.loadgen_cpu_share:.0%}{extra}")
    return row


def _attempt(row: Row, measure: Any, spec: ServerSpec, cfg: Config, src: Path | None) -> bool:
    """Run one measurement; on failure record the error in the row and go on."""
    try:
        measure(spec, cfg, row, src)
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        row.error = f"{row.scenario}: {exc}"
        _progress(f"round {row.round} {row.scenario} {spec.name} FAILED: {exc}")
        return False
    return True


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- command line


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny run of the Python peers (20/40 subscribers, 10 messages, 30 idle, "
                        "1 round); writes no docs")
    p.add_argument("--servers", default=None,
                   help=f"comma-separated, from: {', '.join(SERVERS)}, and realtime_lab@REV "
                        "(realtime_lab as of a git revision, beside the working tree)")
    p.add_argument("--scenarios", default=None,
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default all; "
                        "with --smoke all but join-storm)")
    p.add_argument("--sizes", "--subscribers", "-n", type=_ints, default=None,
                   help="burst group sizes, comma-separated (default 1000,5000)")
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--idle", type=int, default=None, help="idle connections (0 skips)")
    p.add_argument("--large", type=int, default=None,
                   help="subscribers in the large-group check (default 10000; 0 skips)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--paced-rate", type=float, default=0.0,
                   help="deliveries/s of the paced run (default: half of realtime_lab's "
                        "median burst deliveries/s)")
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between paced publishes (overrides --paced-rate)")
    p.add_argument("--paced-seconds", type=float, default=1.0,
                   help="length of the paced run (sets the message count, 50..4000)")
    p.add_argument("--sample-every", type=int, default=10,
                   help="every k-th subscriber decodes the latency stamp of all its messages")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds per phase; undelivered messages at the timeout count as lost")
    p.add_argument("--csv", type=Path, default=None, help="where to write the raw rows")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--ref", default=None,
                   help="measure realtime_lab as of this git revision (e.g. HEAD) instead of "
                        "the working tree")
    a = p.parse_args(argv)
    smoke = a.smoke
    servers = (a.servers.split(",") if a.servers
               else list(PYTHON_SERVERS) if smoke else list(SERVERS))
    unknown = [s for s in servers if not _known(s)]
    scenarios = (a.scenarios.split(",") if a.scenarios
                 else list(ISSUE7) if smoke else list(SCENARIOS))
    if unknown or any(s not in SCENARIOS for s in scenarios):
        p.error(f"unknown server(s) or scenario(s): {a.servers} {a.scenarios}")
    cfg = Config(
        servers=servers, scenarios=scenarios,
        sizes=a.sizes or ([20, 40] if smoke else [1000, 5000]),
        messages=a.messages or (10 if smoke else 200),
        size=a.size,
        idle=a.idle if a.idle is not None else (30 if smoke else 5000),
        large=a.large if a.large is not None else (100 if smoke else 10000),
        large_messages=5 if smoke else 10,
        rounds=a.rounds or (1 if smoke else 3),
        paced_rate=a.paced_rate,
        paced_interval=a.interval or (0.005 if smoke and not a.paced_rate else 0.0),
        paced_seconds=0.1 if smoke else a.paced_seconds,
        paced_messages=(10, 20) if smoke else (50, 4000),
        sample_every=a.sample_every,
        settle=0.05 if smoke else 0.5,
        timeout=min(a.timeout, 20.0) if smoke else a.timeout,
        csv_path=a.csv,
        write_docs=not (a.no_docs or smoke),
        smoke=smoke,
        ref=a.ref,
    )
    for name in cfg.servers:
        why = spec_for(name).unavailable()
        rev = name.partition("@")[2]
        if why is None and rev and not _git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}"):
            why = f"unknown git revision {rev!r}"
        if why is not None:
            cfg.skipped[name] = why
    if cfg.csv_path is None and not smoke:
        cfg.csv_path = DATA / f"bench_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M}.csv"
    return cfg


def _known(name: str) -> bool:
    try:
        spec_for(name)
    except KeyError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run, print, write. Exit status 1 when a measurement failed, 2 when messages were lost."""
    from benchmarks import report

    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the servers in finally blocks
    command = "python -m benchmarks.run" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    storm = 0
    if "join-storm" in cfg.scenarios:
        from benchmarks import join_storm

        cfg.scenarios.remove("join-storm")
        servers = [s for s in cfg.servers if s.partition("@")[0] in JOIN_STORM_SERVERS]
        storm = join_storm.report(join_storm.config(
            servers=servers, smoke=cfg.smoke, timeout=max(cfg.timeout, 300.0)), command)
        if not cfg.scenarios:
            return storm
    for name, why in cfg.skipped.items():
        print(f"{name} skipped: {why}", flush=True)
    when = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    rows = run_benchmark(cfg)
    took = time.monotonic() - started
    text = report.render(cfg, rows, command, when, took)
    print(text)
    if cfg.csv_path is not None:
        report.write_csv(rows, cfg.csv_path)
        print(f"raw rows: {cfg.csv_path}")
    if cfg.write_docs:
        report.update_docs(text, DOCS)
        print(f"tables written to {DOCS}")
    failed = [r for r in rows if r.error]
    for r in failed:
        print(f"round {r.round} {r.scenario} {r.server} FAILED: {r.error.splitlines()[0]}")
    if failed or storm:
        return 1
    return 2 if any(r.lost for r in rows) else 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())

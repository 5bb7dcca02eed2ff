"""Fan-out benchmark runner: ``python -m benchmarks.run`` (``make bench``).

For each round and each server under test (interleaved: A B A B ...) it starts
the server in its own process, runs the load generator in another process
(``benchmarks.loadgen``) for the fan-out burst, then starts a fresh server for
the idle-memory measurement. It prints a table of medians and ratios, writes
the raw rows as CSV into data/bench/ and the table into docs/performance.md.

``--smoke`` runs a tiny version (a few seconds, no docs written).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import platform
import selectors
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from benchmarks.servers import SERVERS, ServerSpec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
DATA = ROOT / "data" / "bench"
BASELINE = "tornado"
TARGET_RATIO = 0.6  # issue 2: realtime_lab CPU per delivery <= 0.6x plain Tornado


@dataclass
class Config:
    """What one benchmark run does."""

    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    subscribers: int = 1000
    messages: int = 200
    size: int = 100
    idle: int = 5000
    rounds: int = 5
    interval: float = 0.0
    timeout: float = 180.0
    csv_path: Path | None = None
    write_docs: bool = True
    smoke: bool = False
    ref: str | None = None
    code: str = ""  # the measured revision, resolved once when the run starts

    @property
    def scenario(self) -> str:
        return "paced" if self.interval > 0 else "burst"


@dataclass
class Row:
    """One server in one round: the fan-out burst and the idle-memory figures."""

    round: int
    server: str
    scenario: str
    subscribers: int
    messages: int
    size: int
    interval: float
    expected: int = 0
    received: int = 0
    lost: int = 0
    timed_out: bool = False
    burst_seconds: float = 0.0
    deliveries_per_s: float = 0.0
    server_cpu_s: float = 0.0
    server_us_per_delivery: float = float("nan")
    server_cpu_ticks_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    loadgen_cpu_share: float = 0.0
    frames_per_read: float = 0.0
    min_per_client: int = 0
    max_per_client: int = 0
    idle_connections: int = 0
    rss_before: int = 0
    rss_after: int = 0
    bytes_per_idle_connection: float = float("nan")
    code: str = ""
    error: str = ""


# ---------------------------------------------------------------------- processes


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


@contextlib.contextmanager
def server_process(spec: ServerSpec, src: Path | None = None,
                   timeout: float = 20.0) -> Iterator[tuple[int, int]]:
    """Start a server module; yield (pid, port); always stop it (stdin EOF, then kill).

    With ``src`` (see :func:`source_tree`) the server runs from that directory,
    so ``import realtime_lab`` finds the snapshot before the working tree.
    """
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", spec.module, *spec.args], cwd=src or ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
        )
        try:
            assert proc.stdout is not None
            port = _read_port(proc, proc.stdout, timeout)
            if port is None:
                raise RuntimeError(f"{spec.name} did not report its port within {timeout}s")
            yield proc.pid, port
        except Exception as exc:
            errors.seek(0)
            tail = errors.read()[-1500:].decode(errors="replace")
            raise RuntimeError(f"{exc}\n--- {spec.name} stderr (tail) ---\n{tail}") from exc
        finally:
            _stop(proc)


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
            proc.wait(timeout=5.0)
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


# ---------------------------------------------------------------------- measuring


def measure_fanout(spec: ServerSpec, cfg: Config, row: Row, src: Path | None) -> None:
    """The burst: fill ``row`` with deliveries, loss and CPU figures."""
    with server_process(spec, src) as (pid, port):
        result = run_loadgen(
            ["fanout", "--port", str(port), "--server-pid", str(pid),
             "--subscribers", str(cfg.subscribers), "--messages", str(cfg.messages),
             "--size", str(cfg.size), "--interval", str(cfg.interval),
             "--timeout", str(cfg.timeout)],
            timeout=3 * cfg.timeout + 30)
    for name in ("expected", "received", "lost", "timed_out", "burst_seconds",
                 "deliveries_per_s", "server_cpu_s", "server_us_per_delivery", "server_cpu_ticks_s",
                 "loadgen_cpu_s",
                 "loadgen_cpu_share", "frames_per_read", "min_per_client", "max_per_client"):
        setattr(row, name, result[name])


def measure_idle(spec: ServerSpec, cfg: Config, row: Row, src: Path | None) -> None:
    """RSS growth of a fresh server over ``cfg.idle`` idle connections."""
    with server_process(spec, src) as (pid, port):
        result = run_loadgen(
            ["idle", "--port", str(port), "--server-pid", str(pid), "--idle", str(cfg.idle),
             "--timeout", str(cfg.timeout)],
            timeout=2 * cfg.timeout + 30)
    row.idle_connections = result["idle_connections"]
    row.rss_before = result["rss_before"]
    row.rss_after = result["rss_after"]
    row.bytes_per_idle_connection = result["bytes_per_connection"]


def run_benchmark(cfg: Config) -> list[Row]:
    """All rounds, interleaved across servers; one Row per server per round."""
    specs = [SERVERS[name] for name in cfg.servers]
    rows: list[Row] = []
    if cfg.ref is not None:  # pin the commit now: other people may commit during the run
        cfg.ref = _git("rev-parse", f"{cfg.ref}^{{commit}}") or cfg.ref
    cfg.code = code_revision(cfg.ref)
    with source_tree(cfg.ref) as src:
        for rnd in range(1, cfg.rounds + 1):
            current = [Row(rnd, s.name, cfg.scenario, cfg.subscribers, cfg.messages, cfg.size,
                           cfg.interval, code=cfg.code) for s in specs]
            for spec, row in zip(specs, current, strict=True):
                if _attempt(row, "fan-out", measure_fanout, spec, cfg, src):
                    _progress(f"round {rnd} {spec.name:<13} fan-out: "
                              f"{row.server_us_per_delivery:7.2f} us/delivery, lost {row.lost}, "
                              f"{row.deliveries_per_s:10,.0f} deliveries/s, "
                              f"loadgen CPU {row.loadgen_cpu_share:.0%}")
            if cfg.idle > 0:
                for spec, row in zip(specs, current, strict=True):
                    if _attempt(row, "idle", measure_idle, spec, cfg, src):
                        _progress(f"round {rnd} {spec.name:<13} idle: "
                                  f"{row.bytes_per_idle_connection / 1024:6.1f} KiB/connection")
            rows.extend(current)
    return rows


def _attempt(row: Row, phase: str, measure: Any, spec: ServerSpec, cfg: Config,
             src: Path | None) -> bool:
    """Run one measurement; on failure record the error in the row and go on."""
    try:
        measure(spec, cfg, row, src)
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        row.error = (row.error + f" {phase}: {exc}").strip()
        _progress(f"round {row.round} {spec.name:<13} {phase} FAILED: {exc}")
        return False
    return True


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- reporting


@dataclass
class Summary:
    """Medians of one server's rows."""

    server: str
    runs: int
    us_per_delivery: float
    deliveries_per_s: float
    lost: int
    kib_per_idle: float
    loadgen_share: float
    loadgen_us_per_delivery: float
    frames_per_read: float
    failed: int
    timed_out: int


def summarize(rows: list[Row], servers: list[str]) -> list[Summary]:
    out = []
    for name in servers:
        mine = [r for r in rows if r.server == name and r.expected]
        if not mine:
            continue
        idle = [r.bytes_per_idle_connection / 1024 for r in rows
                if r.server == name and r.idle_connections]
        out.append(Summary(
            server=name, runs=len(mine),
            us_per_delivery=statistics.median(r.server_us_per_delivery for r in mine),
            deliveries_per_s=statistics.median(r.deliveries_per_s for r in mine),
            lost=sum(r.lost for r in mine),
            kib_per_idle=statistics.median(idle) if idle else float("nan"),
            loadgen_share=statistics.median(r.loadgen_cpu_share for r in mine),
            loadgen_us_per_delivery=statistics.median(
                r.loadgen_cpu_s / r.received * 1e6 if r.received else float("nan")
                for r in mine),
            frames_per_read=statistics.median(r.frames_per_read for r in mine),
            failed=sum(1 for r in rows if r.server == name and r.error),
            timed_out=sum(1 for r in mine if r.timed_out),
        ))
    return out


def table(summaries: list[Summary], cfg: Config) -> str:
    """A Markdown table of medians, with ratios to the plain Tornado baseline."""
    base = next((s for s in summaries if s.server == BASELINE), None)
    lines = [
        "| server | server CPU us / delivery | ratio to tornado | deliveries / s | lost "
        "(all runs) | KiB / idle connection | ratio to tornado | load generator CPU us / "
        "delivery (share of wall time) | frames / client read | runs (failed, timed out) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        cpu_ratio = s.us_per_delivery / base.us_per_delivery if base else float("nan")
        mem_ratio = s.kib_per_idle / base.kib_per_idle if base else float("nan")
        lines.append(
            f"| {s.server} | {s.us_per_delivery:.2f} | {_fmt(cpu_ratio, '.3f')} | "
            f"{s.deliveries_per_s:,.0f} | {s.lost} | {_fmt(s.kib_per_idle, '.1f')} | "
            f"{_fmt(mem_ratio, '.2f')} | "
            f"{_fmt(s.loadgen_us_per_delivery, '.2f')} ({s.loadgen_share:.0%}) | "
            f"{s.frames_per_read:.1f} | {s.runs} ({s.failed}, {s.timed_out}) |")
    return "\n".join(lines)


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def verdict(summaries: list[Summary]) -> str:
    """Issue 2's target: realtime_lab loses nothing and uses <= 0.6x Tornado's CPU."""
    by = {s.server: s for s in summaries}
    if "realtime_lab" not in by or BASELINE not in by:
        return "target not evaluated (needs realtime_lab and tornado)"
    lab, base = by["realtime_lab"], by[BASELINE]
    ratio = lab.us_per_delivery / base.us_per_delivery
    ok = lab.lost == 0 and ratio <= TARGET_RATIO
    return (f"issue 2 target (lost 0, CPU ratio <= {TARGET_RATIO}): "
            f"{'MET' if ok else 'NOT MET'} (lost {lab.lost}, ratio {ratio:.3f})")


def machine() -> dict[str, str]:
    """nproc, CPU model, kernel, Python and Tornado versions."""
    import tornado

    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado.version,
    }


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Row)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({n: getattr(row, n) for n in names})


def report_block(cfg: Config, summaries: list[Summary], command: str, csv_path: Path | None,
                 when: dt.datetime) -> str:
    """The generated part of docs/performance.md for one scenario."""
    m = machine()
    load = (f"{cfg.subscribers} subscribers on one channel, one publisher, {cfg.messages} "
            f"messages of {cfg.size} bytes")
    load += (f" paced every {cfg.interval * 1000:g} ms" if cfg.interval > 0
             else " sent as one burst")
    load += f"; idle memory over {cfg.idle} connections" if cfg.idle else "; no idle-memory phase"
    data = f"`{csv_path.relative_to(ROOT)}`" if csv_path and csv_path.is_relative_to(ROOT) \
        else "not written"
    return "\n".join([
        f"Measured {when:%Y-%m-%d %H:%M} UTC with `{command}`.",
        "",
        f"- Code: realtime_lab at {cfg.code or code_revision(cfg.ref)}"
        f"{' (working tree)' if cfg.ref is None else ''}.",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Python {m['python']}, Tornado {m['tornado']}.",
        f"- Load: {load}.",
        f"- Medians of {cfg.rounds} interleaved rounds; raw rows in {data}.",
        "",
        table(summaries, cfg),
        "",
        f"{verdict(summaries)}.",
    ])


def update_docs(block: str, scenario: str, path: Path = DOCS) -> None:
    """Replace this scenario's generated block in docs/performance.md (or append it)."""
    start, end = f"<!-- bench:fanout-{scenario}:start -->", f"<!-- bench:fanout-{scenario}:end -->"
    text = path.read_text() if path.exists() else "# Performance\n"
    new = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Fan-out ({scenario})\n\n{new}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny run (20 subscribers, 20 messages, 50 idle, 1 round); no docs")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated, from: {', '.join(SERVERS)}")
    p.add_argument("--subscribers", "-n", type=int, default=None)
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--idle", type=int, default=None, help="idle connections (0 skips)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between publishes; 0 (default) sends one burst")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds per phase; undelivered messages at the timeout count as lost")
    p.add_argument("--csv", type=Path, default=None, help="where to write the raw rows")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--ref", default=None,
                   help="measure realtime_lab as of this git revision (e.g. HEAD) instead of "
                        "the working tree")
    a = p.parse_args(argv)
    unknown = [s for s in a.servers.split(",") if s not in SERVERS]
    if unknown:
        p.error(f"unknown server(s): {', '.join(unknown)}")
    smoke = a.smoke
    cfg = Config(
        servers=a.servers.split(","),
        subscribers=a.subscribers or (20 if smoke else 1000),
        messages=a.messages or (20 if smoke else 200),
        size=a.size,
        idle=a.idle if a.idle is not None else (50 if smoke else 5000),
        rounds=a.rounds or (1 if smoke else 5),
        interval=a.interval,
        timeout=min(a.timeout, 20.0) if smoke else a.timeout,
        csv_path=a.csv,
        write_docs=not (a.no_docs or smoke),
        smoke=smoke,
        ref=a.ref,
    )
    if cfg.csv_path is None and not smoke:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        cfg.csv_path = DATA / f"fanout{'_paced' if cfg.interval > 0 else ''}_{stamp}.csv"
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Run, print, write. Exit status 1 when a measurement failed, 2 when messages were lost."""
    cfg = parse_args(argv)
    command = "python -m benchmarks.run" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    when = dt.datetime.now(dt.UTC)
    rows = run_benchmark(cfg)
    summaries = summarize(rows, cfg.servers)
    print(table(summaries, cfg))
    print(verdict(summaries))
    if cfg.csv_path is not None:
        write_csv(rows, cfg.csv_path)
        print(f"raw rows: {cfg.csv_path}")
    if cfg.write_docs:
        update_docs(report_block(cfg, summaries, command, cfg.csv_path, when), cfg.scenario)
        print(f"table written to {DOCS}")
    failed = [r for r in rows if r.error]
    for r in failed:
        print(f"round {r.round} {r.server} FAILED: {r.error.splitlines()[0]}")
    if failed:
        return 1
    return 2 if any(r.lost for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

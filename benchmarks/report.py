"""Tables, target verdicts, CSV and the docs block for ``benchmarks.run``."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.servers import NODE_DIR

if TYPE_CHECKING:
    from benchmarks.run import Config, Row

MARK_START, MARK_END = "<!-- bench:issue7:start -->", "<!-- bench:issue7:end -->"
LOADGEN_BUSY = 0.9  # load generator CPU share of wall time above which it may be the limit
# issue 7 targets
CPU_US_MAX = 5.0
FLAT_RATIO_MAX = 1.1
LAG_MS_MAX = 20.0
IDLE_BYTES_MAX = 10_000  # "10 KB", read as 10,000 bytes
P99_MS_MAX = 50.0


def _median(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def _max(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) if vals else float("nan")


def _f(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) or math.isinf(value) else format(value, spec)


class Rows:
    """The rows of one run, grouped by (scenario, server)."""

    def __init__(self, rows: list[Row], servers: list[str]) -> None:
        self.rows = rows
        self.servers = servers

    def of(self, scenario: str, server: str, ok: bool = True) -> list[Row]:
        return [r for r in self.rows if r.scenario == scenario and r.server == server
                and (not ok or not r.error)]

    def med(self, scenario: str, server: str, get: Callable[[Row], float]) -> float:
        return _median(get(r) for r in self.of(scenario, server))

    def worst(self, scenario: str, server: str, get: Callable[[Row], float]) -> float:
        return _max(get(r) for r in self.of(scenario, server))

    def runs(self, scenario: str, server: str) -> str:
        mine = self.of(scenario, server, ok=False)
        failed = sum(1 for r in mine if r.error)
        timed_out = sum(1 for r in mine if r.timed_out)
        return f"{len(mine)} ({failed}, {timed_out})"

    def lost(self, scenario: str, server: str) -> int:
        return sum(r.lost for r in self.of(scenario, server, ok=False))

    def has(self, scenario: str, server: str) -> bool:
        return bool(self.of(scenario, server))


def versions() -> dict[str, str]:
    """Versions of every peer and of the runtimes."""
    out = {"Python": platform.python_version()}
    for dist in ("tornado", "websockets", "python-socketio", "python-engineio", "uvicorn",
                 "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
        if node:
            out["Node.js"] = node
    with contextlib.suppress(OSError, ValueError):
        ws = json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())
        out["ws"] = ws["version"]
    return out


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}; "
            f"load average at the end {load}")


def burst_table(rs: Rows, cfg: Config) -> str:
    sizes = cfg.sizes
    lo, hi = sizes[0], sizes[-1]
    head = ["server"]
    head += [f"CPU us / delivery, {n}" for n in sizes]
    head += [f"ratio {hi}/{lo}"] if len(sizes) > 1 else []
    head += [f"deliveries / s, {n}" for n in sizes]
    head += [f"max loop lag ms, {n} (worst round)" for n in sizes]
    head += [f"KB / idle connection ({cfg.idle})", "load generator CPU share / us per delivery"]
    head += ["lost", "runs (failed, timed out)"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 2) + "|---|"]
    for s in rs.servers:
        if not any(rs.has(f"burst-{n}", s) for n in sizes):
            continue
        cpu = [rs.med(f"burst-{n}", s, lambda r: r.server_us_per_delivery) for n in sizes]
        cells = [s, *(_f(c) for c in cpu)]
        if len(sizes) > 1:
            cells.append(_f(cpu[-1] / cpu[0]))
        cells += [_f(rs.med(f"burst-{n}", s, lambda r: r.deliveries_per_s), ",.0f")
                  for n in sizes]
        cells += [f"{_f(rs.med(f'burst-{n}', s, lambda r: r.loop_lag_max_ms), '.1f')} "
                  f"({_f(rs.worst(f'burst-{n}', s, lambda r: r.loop_lag_max_ms), '.1f')})"
                  for n in sizes]
        cells.append(_f(rs.med(f"idle-{cfg.idle}", s, lambda r: r.bytes_per_connection) / 1000,
                        ".1f"))
        cells.append(" / ".join(
            f"{_f(rs.med(f'burst-{n}', s, lambda r: r.loadgen_cpu_share) * 100, '.0f')}% "
            f"{_f(rs.med(f'burst-{n}', s, lambda r: r.loadgen_us_per_delivery))}"
            for n in sizes))
        cells.append(" / ".join(str(rs.lost(f"burst-{n}", s)) for n in sizes))
        cells.append(" / ".join(rs.runs(f"burst-{n}", s) for n in sizes))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def large_table(rs: Rows, cfg: Config) -> str:
    sc = f"large-{cfg.large}"
    lines = ["| server | subscribers | messages | lost | CPU us / delivery | deliveries / s | "
             "max loop lag ms during the burst (worst round) | max loop lag ms, whole server "
             "life incl. connecting | KB RSS / subscribed connection | load generator CPU "
             "share | runs (failed, timed out) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in rs.servers:
        if not rs.has(sc, s):
            continue
        lines.append(
            f"| {s} | {cfg.large} | {cfg.large_messages} | {rs.lost(sc, s)} | "
            f"{_f(rs.med(sc, s, lambda r: r.server_us_per_delivery))} | "
            f"{_f(rs.med(sc, s, lambda r: r.deliveries_per_s), ',.0f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.loop_lag_max_ms), '.1f')} "
            f"({_f(rs.worst(sc, s, lambda r: r.loop_lag_max_ms), '.1f')}) | "
            f"{_f(rs.med(sc, s, lambda r: r.loop_lag_life_ms), '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.bytes_per_connection) / 1000, '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.loadgen_cpu_share) * 100, '.0f')}% | "
            f"{rs.runs(sc, s)} |")
    return "\n".join(lines)


def paced_scenario(rs: Rows) -> str | None:
    return next((r.scenario for r in rs.rows if r.scenario.startswith("paced-")), None)


def paced_table(rs: Rows, sc: str) -> str:
    lines = ["| server | offered deliveries / s | delivered / s | latency p50 ms | p99 ms | "
             "max ms | CPU us / delivery | max loop lag ms (worst round) | frames / client "
             "read | load generator CPU share | lost | runs (failed, timed out) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in rs.servers:
        if not rs.has(sc, s):
            continue
        lines.append(
            f"| {s} | {_f(rs.med(sc, s, lambda r: r.offered_per_s), ',.0f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.deliveries_per_s), ',.0f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.latency_p50_ms), '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.latency_p99_ms), '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.latency_max_ms), '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.server_us_per_delivery))} | "
            f"{_f(rs.med(sc, s, lambda r: r.loop_lag_max_ms), '.1f')} "
            f"({_f(rs.worst(sc, s, lambda r: r.loop_lag_max_ms), '.1f')}) | "
            f"{_f(rs.med(sc, s, lambda r: r.frames_per_read), '.1f')} | "
            f"{_f(rs.med(sc, s, lambda r: r.loadgen_cpu_share) * 100, '.0f')}% | "
            f"{rs.lost(sc, s)} | {rs.runs(sc, s)} |")
    return "\n".join(lines)


def targets(rs: Rows, cfg: Config) -> list[str]:
    """One line per issue 7 target: MET, NOT MET (with the figure) or not measured."""
    lab = "realtime_lab"
    out: list[str] = []

    def line(name: str, ok: bool | None, figure: str) -> None:
        verdict = "not measured in this run" if ok is None else ("MET" if ok else "NOT MET")
        out.append(f"- {name}: **{verdict}** ({figure})")

    lo, hi = min(cfg.sizes), max(cfg.sizes)
    b_lo, b_hi = f"burst-{lo}", f"burst-{hi}"
    if rs.has(b_lo, lab):
        cpu, lost = rs.med(b_lo, lab, lambda r: r.server_us_per_delivery), rs.lost(b_lo, lab)
        line(f"1. server CPU per delivery at {lo} subscribers <= {CPU_US_MAX:g} us, nothing lost",
             cpu <= CPU_US_MAX and lost == 0, f"{_f(cpu)} us, lost {lost}")
    else:
        line("1. server CPU per delivery <= 5 us", None, "no realtime_lab burst")
    if hi != lo and rs.has(b_lo, lab) and rs.has(b_hi, lab):
        ratio = (rs.med(b_hi, lab, lambda r: r.server_us_per_delivery)
                 / rs.med(b_lo, lab, lambda r: r.server_us_per_delivery))
        line(f"2. flat with group size: CPU per delivery at {hi} <= {FLAT_RATIO_MAX}x at {lo}",
             ratio <= FLAT_RATIO_MAX and rs.lost(b_hi, lab) == 0,
             f"{_f(ratio)}x, lost {rs.lost(b_hi, lab)}")
    else:
        line("2. flat with group size", None, "needs two burst sizes")
    sc = f"large-{cfg.large}"
    if rs.has(sc, lab):
        lag = rs.worst(sc, lab, lambda r: r.loop_lag_max_ms)
        line(f"3. a broadcast to {cfg.large} subscribers never blocks the loop > {LAG_MS_MAX:g} ms",
             None if math.isnan(lag) else lag <= LAG_MS_MAX,
             f"worst probe lateness during the burst {_f(lag, '.1f')} ms over all "
             "rounds; heartbeats of other connections are not checked here")
    else:
        line("3. loop lag during a 10,000-subscriber broadcast", None, "no large-group run")
    si = f"idle-{cfg.idle}"
    if rs.has(si, lab):
        per = rs.med(si, lab, lambda r: r.bytes_per_connection)
        line(f"4a. server RSS per idle connection <= 10 KB ({cfg.idle} connections)",
             per <= IDLE_BYTES_MAX, f"{_f(per, ',.0f')} bytes")
    else:
        line("4a. memory per idle connection", None, "no idle run")
    if rs.has(sc, lab):
        mine = rs.of(sc, lab, ok=False)
        ok = all(not r.error and r.lost == 0 and r.received == r.expected for r in mine)
        line(f"4b. {cfg.large} concurrent connections held by one server process, all get the "
             "broadcast", ok and cfg.large >= 10000,
             f"{sum(1 for r in mine if not r.error and r.lost == 0)}/{len(mine)} rounds with "
             f"{cfg.large} subscribers and nothing lost")
    else:
        line("4b. 10,000 concurrent connections", None, "no large-group run")
    sp = paced_scenario(rs)
    if sp is not None and rs.has(sp, lab):
        p99 = rs.med(sp, lab, lambda r: r.latency_p99_ms)
        line(f"5. p99 delivery latency < {P99_MS_MAX:g} ms with a paced publisher at half the "
             "maximum deliveries/s", p99 < P99_MS_MAX and rs.lost(sp, lab) == 0,
             f"p99 {_f(p99, '.1f')} ms (median of rounds), lost {rs.lost(sp, lab)}")
    else:
        line("5. p99 latency at a steady rate", None, "no paced run")
    line("6. instrumentation cost <= 5%", None,
         "measured by `python -m benchmarks.recorder_overhead`, not by this runner")
    return out


def loadgen_notes(rs: Rows) -> list[str]:
    busy = sorted({f"{r.scenario} {r.server}" for r in rs.rows
                   if not r.error and r.loadgen_cpu_share >= LOADGEN_BUSY})
    if not busy:
        return [f"Load generator: CPU share of wall time below {LOADGEN_BUSY:.0%} in every "
                "fan-out measurement (it was not the bottleneck)."]
    return [f"Load generator: CPU share of wall time >= {LOADGEN_BUSY:.0%} in: "
            f"{', '.join(busy)}; those figures may be limited by the load generator."]


def render(cfg: Config, rows: list[Row], command: str, when: dt.datetime, took: float) -> str:
    """The whole generated block: header, tables, target lines."""
    rs = Rows(rows, [s for s in cfg.servers if s not in cfg.skipped])
    v = versions()
    root = Path(__file__).resolve().parent.parent
    data = "not written"
    if cfg.csv_path is not None:
        path = cfg.csv_path.resolve()
        data = f"`{path.relative_to(root) if path.is_relative_to(root) else path}`"

    out = [
        f"Measured {when:%Y-%m-%d %H:%M} UTC with `{command}` (took {took / 60:.1f} min).",
        "",
        f"- Code: realtime_lab at {cfg.code}{' (working tree)' if cfg.ref is None else ''}"
        + "".join(f"; {name} at {code}" for name, code in cfg.codes.items() if "@" in name)
        + ".",
        f"- Machine: {machine()}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"- Medians of {cfg.rounds} interleaved rounds (worst round in brackets where "
        f"shown); raw rows in {data}.",
    ]
    for name, why in cfg.skipped.items():
        out.append(f"- {name} skipped: {why}.")
    if any(r.scenario.startswith("burst-") for r in rows):
        out += ["", f"**Burst**: {cfg.messages} messages of {cfg.size} bytes published back "
                f"to back to one channel of N subscribers; idle memory over {cfg.idle} "
                "connections (KB = 1000 bytes).", "", burst_table(rs, cfg)]
    if any(r.scenario.startswith("large-") for r in rows):
        out += ["", f"**Large group**: {cfg.large} subscribers on one channel, a burst of "
                f"{cfg.large_messages} messages.", "", large_table(rs, cfg)]
    sp = paced_scenario(rs)
    if sp is not None:
        first = next(r for r in rows if r.scenario == sp)
        samples = _median(float(r.latency_samples) for r in rows if r.scenario == sp)
        out += ["", f"**Paced**: {first.subscribers} subscribers, one publish every "
                f"{first.interval * 1e3:.2f} ms ({first.subscribers / first.interval:,.0f} "
                f"deliveries/s offered, half of realtime_lab's median burst rate unless set "
                f"with --paced-rate), {first.messages} messages. Latency = receive time - "
                "the publisher's `time.monotonic_ns()` stamp, read by every "
                f"{cfg.sample_every}th subscriber from all its messages "
                f"({samples:,.0f} samples per run).", "", paced_table(rs, sp)]
    out += ["", *loadgen_notes(rs), "", "Issue 7 targets (realtime_lab):", "", *targets(rs, cfg)]
    return "\n".join(out)


def write_csv(rows: list[Row], path: Path) -> None:
    from benchmarks.run import Row

    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Row)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({n: getattr(row, n) for n in names})


def update_docs(block: str, path: Path) -> None:
    """Replace the generated block in docs/performance.md (or append it)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    new = f"{MARK_START}\n{block}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + new + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Results (issue 7 benchmark)\n\n{new}\n"
    path.write_text(text)

"""Dashboard overhead: the server's CPU with and without a live dashboard, same run.

``python benchmarks/dashboard_overhead.py`` (``--smoke`` for a short run). The
measurement runs inside a real IPython kernel (started with jupyter_client), as
in a notebook: the dashboard is displayed, so every change is serialized and
sent on the kernel's iopub channel like to a browser (no front end reads it;
sending is the kernel's share). The server runs on the kernel's event loop;
1000 subscribers and a publisher sending 50 messages of 100 bytes a second run
in a load process (``realtime_lab.instrument.loadgen``). Each round publishes
for ``--seconds`` and measures the kernel process's CPU time (all its threads:
the event loop and ipykernel's iopub thread) per second; rounds alternate
dashboard off and on (the refresh task stopped and started), and the report
gives the medians and the overhead. ``--in-process`` runs the same without a
kernel (no comm: rendering only). The target (issue 17) is at most 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def measure(subscribers: int = 1000, rate: float = 50.0, seconds: float = 5.0,
                  rounds: int = 8, size: int = 100, presence: bool = True,
                  interval: float | None = None, display: Any = None) -> dict[str, Any]:
    """Run the interleaved rounds on the running loop; return the results."""
    import realtime_lab
    from realtime_lab.instrument.experiment import LoadProcess, raise_fd_limit

    raise_fd_limit(2 * subscribers + 512)
    server = await realtime_lab.serve(port=0, presence_channels="*" if presence else None)
    load = await LoadProcess.start(server.url, subscribers, "bench", timeout=300)
    dash = server.dashboard() if interval is None else server.dashboard(interval=interval)
    if display is not None:
        display(dash)
    dash.stop()
    count = max(1, round(rate * seconds))
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    lost = 0
    try:
        await load.burst(count // 4, size, pace=1 / rate)  # warm-up
        for r in range(rounds):
            for variant in (("off", "on") if r % 2 == 0 else ("on", "off")):
                if variant == "on":
                    dash.start()
                c0, w0 = time.process_time(), time.perf_counter()
                reply = await load.burst(count, size, timeout=seconds * 4 + 30, pace=1 / rate)
                spent, wall = time.process_time() - c0, time.perf_counter() - w0
                dash.stop()
                lost += int(reply["expected"]) - int(reply["received"])
                cpu[variant].append(spent / wall)
    finally:
        dash.stop()
        await load.close()
        await server.stop()
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    return {"subscribers": subscribers, "publishes_per_s": rate, "seconds_per_round": seconds,
            "rounds": rounds, "presence": presence, "lost": lost, "interval": dash.interval,
            "cpu_share_off": cpu["off"], "cpu_share_on": cpu["on"],
            "median_off": off, "median_on": on, "overhead": on / off - 1,
            "refreshes": dash.refreshes, "skipped": dash.skipped}


KERNEL_CODE = """
import json, sys
sys.path.insert(0, {root!r})
from IPython.display import display
from benchmarks.dashboard_overhead import measure
result = await measure(**{kwargs!r}, display=display)
print("RESULT " + json.dumps(result))
"""


def in_kernel(kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`measure` in a fresh IPython kernel; return its result."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    out: list[str] = []
    try:
        kc.execute_interactive(KERNEL_CODE.format(root=str(ROOT), kwargs=kwargs),
                               timeout=timeout, output_hook=lambda msg: out.append(
                                   msg["content"].get("text", "")
                                   if msg["msg_type"] == "stream" else ""))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    for line in "".join(out).splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError("the kernel printed no result:\n" + "".join(out)[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="publishes per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each variant")
    parser.add_argument("--no-presence", dest="presence", action="store_false")
    parser.add_argument("--interval", type=float, help="dashboard refresh interval (s)")
    parser.add_argument("--in-process", action="store_true", help="no kernel, no comm")
    parser.add_argument("--smoke", action="store_true", help="a short run")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args()
    kwargs = {"subscribers": args.subscribers, "rate": args.rate, "seconds": args.seconds,
              "rounds": args.rounds, "presence": args.presence, "interval": args.interval}
    if args.smoke:
        kwargs.update(subscribers=50, seconds=1.0, rounds=2)
    started = time.time()
    run = (lambda: asyncio.run(measure(**kwargs))) if args.in_process else (
        lambda: in_kernel(kwargs, timeout=1800))
    result = run()
    result.update(mode="in-process" if args.in_process else "kernel",
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                  python=platform.python_version(), machine=platform.machine())
    print(f"{result['subscribers']} subscribers, {result['publishes_per_s']:g} publishes/s, "
          f"{result['rounds']} rounds of {result['seconds_per_round']:g} s each way "
          f"({result['mode']}, refresh every {result['interval']:g} s), lost {result['lost']}")
    print(f"server CPU (share of one core, median): off {result['median_off']:.3%}, "
          f"on {result['median_on']:.3%}; dashboard overhead {result['overhead']:+.1%} "
          f"({result['refreshes']} refreshes, {result['skipped']} skipped as unchanged)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()

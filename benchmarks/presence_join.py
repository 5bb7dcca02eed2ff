"""Presence cost: N members join one presence channel at once.

Two measurements (``python benchmarks/presence_join.py --members 1000``):

* ``hub``: in the hub alone, fake ports, no sockets: the server-side cost of the
  joins (wall and CPU time, joins/s, presence diffs queued: every join goes to
  every earlier member, N*(N-1)/2 diff deliveries, presence events emitted).
* ``sockets`` (``--sockets``): a real server in a child process and N WebSocket
  clients in this one, all connected first; then every client subscribes at
  once. It ends when every client's member list, rebuilt from presence_state and
  diffs with :class:`~realtime_lab.client.presence.PresenceView`, holds all N
  members with exact counts. Reports the server's join phase (from the first
  subscribe sent to the N-th ``presence.join`` event in the server, every diff
  queued by then), the time until every client's list is complete (bounded by
  the N clients decoding N*(N-1)/2 diffs in one Python process), diffs
  received/s and the server process's CPU seconds (user+system, psutil) over the
  whole run, writes included.

``--minimal`` runs with ``presence_details=False`` (the opt-out wire); the
default is the server default (``presence_details=True``). ``--window SECONDS``
sets ``presence_batch_window`` (the server default, 0.05, when not given; 0: each
diff at once, the wire before batching). With a window, the hub mode runs on an
event loop (the batcher waits windows out on it), the joins in chunks of
``--chunk`` per loop turn, and the diffs queued are counted once the last window
has been sent; in both modes ``diff_deliveries`` / ``server_diffs_queued`` count
presence frames queued to the members (the ``presence_state`` each newcomer gets
not included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from realtime_lab.client.presence import PresenceView
from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.testing import NullPort

CHANNEL = "presence-room"
SUBSCRIBE = json.dumps({"type": "subscribe", "channel": CHANNEL})
BIG_QUEUE = 64 * 1024 * 1024


DEFAULT_WINDOW = ServerOptions().presence_batch_window


def run(members: int, grace: float, details: bool = True, window: float = DEFAULT_WINDOW,
        chunk: int = 50) -> dict[str, Any]:
    """The hub alone: N subscribes in a row, fake ports (on a loop when batching)."""
    # channel_rules=(): measure presence alone, without channel authorization
    hub = Hub(ServerOptions(presence_grace=grace, max_outbound_bytes=BIG_QUEUE,
                            channel_rules=(), presence_details=details,
                            presence_batch_window=window))
    events: list[object] = []
    hub.bus.subscribe(events.append, "presence.*")
    sessions = [hub.open(NullPort(), user=f"u{i}", request=ConnectRequest(remote="b"))
                for i in range(members)]
    t0, c0 = time.perf_counter(), time.process_time()
    if window > 0:
        asyncio.run(_join_on_a_loop(hub, sessions, chunk))
    else:
        for s in sessions:
            hub.receive_text(s, SUBSCRIBE)
    t1, c1 = time.perf_counter(), time.process_time()
    deliveries = hub.stats.deliveries
    return {"mode": "hub", "members": members, "presence_details": details,
            "presence_batch_window": window,
            "diff_messages": hub.presence_batch.stats.diffs_out,  # each framed once
            "seconds": round(t1 - t0, 4), "cpu_seconds": round(c1 - c0, 4),
            "joins_per_s": round(members / (t1 - t0)),
            "diff_deliveries": deliveries,
            "diff_deliveries_per_s": round(deliveries / (t1 - t0)),
            "presence_events": len(events)}


async def _join_on_a_loop(hub: Hub, sessions: list[Any], chunk: int) -> None:
    """Subscribe ``chunk`` sessions per loop turn, then wait for the last window."""
    hub.bind(asyncio.get_running_loop())
    for i, s in enumerate(sessions):
        hub.receive_text(s, SUBSCRIBE)
        if i % chunk == chunk - 1:
            await asyncio.sleep(0)
    while hub.presence_batch.pending:
        await asyncio.sleep(hub.presence_batch.window / 4)


SERVER = """
import asyncio, sys, time
import realtime_lab
from realtime_lab import ServerOptions

async def main():
    opts = ServerOptions(channel_rules=(), presence_details={details},
                         max_outbound_bytes={queue}, heartbeat_interval=600.0,
                         heartbeat_timeout=600.0, presence_batch_window={window})
    server = await realtime_lab.serve(port=0, options=opts)
    joins = []

    def joined(event):  # the time of the N-th join (this process's view)
        joins.append(event)
        if len(joins) == {members}:  # after this turn: its diff is queued too
            now = time.time()
            # once its window (if any) has gone out: every diff is queued
            asyncio.get_running_loop().call_later(
                {window} * 1.5, lambda: print(f"joined {{now}} {{server.hub.stats.deliveries}}",
                                             flush=True))

    server.on("presence.join", joined)
    print(server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def run_sockets(members: int, details: bool = True, timeout: float = 300.0,
                      window: float = DEFAULT_WINDOW) -> dict[str, Any]:
    """A real server (child process) and ``members`` clients joining at once."""
    import psutil
    from tornado.websocket import websocket_connect

    child = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(details=details, queue=BIG_QUEUE, members=members,
                                             window=window)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        proc = psutil.Process(child.pid)
        url = f"ws://127.0.0.1:{port}/ws"
        conns = []
        for i in range(members):
            ws = await websocket_connect(f"{url}?user=u{i}", max_message_size=BIG_QUEUE)
            await ws.read_message()  # welcome
            conns.append(ws)
        views = [PresenceView() for _ in conns]
        diffs = [0]

        async def follow(ws: Any, view: PresenceView) -> None:
            while len(view.channels.get(CHANNEL, {})) < members:
                text = await ws.read_message()
                if text is None:
                    raise RuntimeError("the server closed a connection")
                msg = json.loads(text)
                if msg["type"] == "presence_diff":
                    diffs[0] += 1
                if msg["type"] in ("presence_state", "presence_diff"):
                    view.apply(msg)

        cpu0 = proc.cpu_times()
        t0, wall0 = time.perf_counter(), time.time()
        for ws in conns:  # all at once: every subscribe is written before any reply is read
            ws.write_message(SUBSCRIBE)
        await asyncio.wait_for(asyncio.gather(*(follow(ws, v) for ws, v in
                                                zip(conns, views, strict=True))), timeout)
        t1 = time.perf_counter()
        cpu1 = proc.cpu_times()
        _, last_join, queued = child.stdout.readline().split()
        join_phase = float(last_join) - wall0
        expected = {f"u{i}": {"connections": 1} for i in range(members)}
        exact = all(v.channels[CHANNEL] == expected for v in views)
        for ws in conns:
            ws.close()
        server_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        return {"mode": "sockets", "members": members, "presence_details": details,
                "presence_batch_window": window,
                "server_join_phase_seconds": round(join_phase, 3),
                "server_joins_per_s": round(members / join_phase),
                "server_diffs_queued": int(queued),
                "server_diffs_queued_per_s": round(int(queued) / join_phase),
                "seconds_until_every_list_is_complete": round(t1 - t0, 3),
                "diffs_received": diffs[0],
                "diffs_received_per_s": round(diffs[0] / (t1 - t0)),
                "server_cpu_seconds": round(server_cpu, 3),
                "server_cpu_percent_of_one_core": round(100 * server_cpu / (t1 - t0)),
                "every_view_exact": exact}
    finally:
        child.terminate()
        child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--grace", type=float, default=0.0)
    parser.add_argument("--minimal", action="store_true",
                        help="presence_details=False (the opt-out wire)")
    parser.add_argument("--sockets", action="store_true",
                        help="a real server process and N WebSocket clients")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW,
                        help="presence_batch_window in seconds (0: each diff at once)")
    parser.add_argument("--chunk", type=int, default=50,
                        help="hub mode with a window: joins per loop turn")
    args = parser.parse_args()
    details = not args.minimal
    if args.sockets:
        print(json.dumps(asyncio.run(run_sockets(args.members, details, window=args.window))))
    else:
        print(json.dumps(run(args.members, args.grace, details, args.window, args.chunk)))


if __name__ == "__main__":
    main()

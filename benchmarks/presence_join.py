"""Presence cost: N members join one presence channel at once (in the hub, fake ports).

Measures the server-side cost of the joins alone (no sockets): wall time, joins
per second, presence diffs queued (every join goes to every earlier member:
N*(N-1)/2 diff deliveries) and presence events emitted. Run:
``python benchmarks/presence_join.py --members 1000``.
"""

from __future__ import annotations

import argparse
import json
import time

from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.hooks import ConnectRequest


class NullPort:
    remote = "bench"

    def __init__(self) -> None:
        self.frames = 0

    def write(self, data: bytes) -> None:
        self.frames += 1

    def buffered_bytes(self) -> int:
        return 0

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


def run(members: int, grace: float) -> dict[str, float]:
    # channel_rules=(): measure presence alone, without channel authorization
    hub = Hub(ServerOptions(presence_grace=grace, max_outbound_bytes=64 * 1024 * 1024,
                            channel_rules=()))
    events: list[object] = []
    hub.bus.subscribe(events.append, "presence.*")
    sessions = [hub.open(NullPort(), user=f"u{i}", request=ConnectRequest(remote="b"))
                for i in range(members)]
    t0 = time.perf_counter()
    for s in sessions:
        hub.receive_text(s, '{"type":"subscribe","channel":"presence-room"}')
    t1 = time.perf_counter()
    deliveries = hub.stats.deliveries
    return {"members": members, "seconds": round(t1 - t0, 4),
            "joins_per_s": round(members / (t1 - t0)),
            "diff_deliveries": deliveries,
            "diff_deliveries_per_s": round(deliveries / (t1 - t0)),
            "presence_events": len(events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--grace", type=float, default=0.0)
    args = parser.parse_args()
    print(json.dumps(run(args.members, args.grace)))


if __name__ == "__main__":
    main()

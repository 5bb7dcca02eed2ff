"""Server CPU of one publish on the inbound path, socket-free (issue 13: the data model check).

A :class:`~realtime_lab.core.Hub` with fake ports (realtime_lab.testing) and a
turn-by-turn scheduler; a publisher that is not subscribed sends ``publish``
messages to a channel of ``--subscribers`` JSON subscribers (NullPort), and the
time of ``Hub.receive_text`` / ``Hub.receive_binary`` / ``Hub.publish`` plus the
flush is measured per publish: the median of ``--repeats`` runs of
``--number`` publishes, in microseconds. Run it on two checkouts to compare
(``PYTHONPATH=/path/to/other/checkout python -m benchmarks.inbound_cost``).

Payloads: ``small`` (about 60 bytes), ``1k`` (about 1 KB of objects, numbers and
ASCII strings), ``1k-utf8`` (1 KB with raw non-ASCII text, as a browser sends it),
``1k-escaped`` (1 KB with ``\\uXXXX`` escapes and emoji as surrogate pairs, as
Python's ``json.dumps`` sends it by default), and ``1k-floats`` (1 KB of numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

PAYLOADS: dict[str, Any] = {
    "small": {"text": "hello", "n": 42},
    "1k": {"items": [{"id": i, "name": f"item-{i}", "price": 12.5, "tags": ["a", "b"]}
                     for i in range(14)], "note": "x" * 40},
    "1k-utf8": {"messages": [{"user": "María", "text": "¿Qué tal? Ñandú 😀 ünïcödé"}
                             for _ in range(17)]},
    "1k-floats": {"series": [i * 1.2345678 for i in range(60)]},
}
PAYLOADS["1k-escaped"] = PAYLOADS["1k-utf8"]  # same value, sent with ensure_ascii=True


def _text(name: str, data: Any) -> str:
    msg = {"type": "publish", "channel": "c", "data": data}
    if name == "1k-escaped":
        return json.dumps(msg, separators=(",", ":"))
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


def build(subscribers: int) -> tuple[Any, Any, Any, Any]:
    """A hub with ``subscribers`` JSON subscribers of ``c``, a JSON and a msgpack publisher."""
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.protocol.wire import MSGPACK, wire_format
    from realtime_lab.testing import NullPort, TurnScheduler

    sched = TurnScheduler()
    hub = Hub(ServerOptions(presence_channels=None, error_limit=None), schedule=sched)
    for _ in range(subscribers):
        hub.subscribe(hub.open(NullPort()), "c")
    publisher = hub.open(NullPort())
    port = NullPort()
    port.wire = wire_format(MSGPACK)  # type: ignore[attr-defined]
    binary = hub.open(port)
    sched.run()
    return hub, sched, publisher, binary


def per_publish(step: Callable[[], Any], sched: Any, number: int, repeats: int) -> float:
    """Median microseconds of ``step()`` plus the flush, over ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(number):
            step()
            sched.run()
        runs.append((time.process_time() - t0) / number * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--number", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    import msgpack

    hub, sched, publisher, binary = build(args.subscribers)
    print(f"us per publish to {args.subscribers} JSON subscribers "
          f"(median of {args.repeats} x {args.number})")
    print(f"{'payload':<12}{'bytes':>7}{'json':>9}{'msgpack':>9}{'server':>9}")
    for name, data in PAYLOADS.items():
        text = _text(name, data)
        packed = msgpack.packb({"type": "publish", "channel": "c", "data": data})

        def json_step(text: str = text) -> Any:
            return hub.receive_text(publisher, text)

        def msgpack_step(packed: bytes = packed) -> Any:
            return hub.receive_binary(binary, packed)

        def server_step(data: Any = data) -> Any:
            return hub.publish("c", data)

        j = per_publish(json_step, sched, args.number, args.repeats)
        m = per_publish(msgpack_step, sched, args.number, args.repeats)
        s = per_publish(server_step, sched, args.number, args.repeats)
        print(f"{name:<12}{len(text.encode()):>7}{j:>9.2f}{m:>9.2f}{s:>9.2f}")
    assert hub.stats.errors_sent == 0, "a benchmark publish was refused"


if __name__ == "__main__":
    main()

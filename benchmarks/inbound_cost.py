"""Server CPU of one publish on the inbound path, socket-free (issue 13: the data model check).

A :class:`~realtime_lab.core.Hub` with fake ports (realtime_lab.testing) and a
turn-by-turn scheduler; a publisher that is not subscribed sends ``publish``
messages to a channel of ``--subscribers`` JSON subscribers (NullPort), and the
time of ``Hub.receive_text`` / ``Hub.receive_binary`` / ``Hub.publish`` plus the
flush is measured per publish, in microseconds: the best of ``--repeats`` short
rounds of ``--number`` publishes (on a shared machine, the round that no other
process interrupted). Run it on two checkouts to compare
(``PYTHONPATH=/path/to/other/checkout python -m benchmarks.inbound_cost``).

``--ab`` measures this checkout twice, interleaved round by round: with the data
model checks (issue 13) and with them patched out (``json_text_suspect``,
``Hub.publish``'s ``check_value``, the msgpack walk and ``FanOut.prepare``), and
prints the ratio: what the checks cost on a machine whose load changes (the
msgpack "off" has no walk at all, where the code before issue 13 had one).

Payloads: ``small`` (about 60 bytes), ``1k`` (about 1 KB of objects, numbers and
ASCII strings), ``1k-utf8`` (1 KB with raw non-ASCII text, as a browser sends it),
``1k-escaped`` (1 KB with ``\\uXXXX`` escapes and emoji as surrogate pairs, as
Python's ``json.dumps`` sends it by default), and ``1k-floats`` (1 KB of numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
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
    port.wire = wire_format(MSGPACK)  # type: ignore[attr-defined]  # (runs on older checkouts)
    binary = hub.open(port)
    sched.run()
    return hub, sched, publisher, binary


def per_publish(step: Callable[[], Any], sched: Any, number: int, repeats: int) -> float:
    """Microseconds of ``step()`` plus the flush: the minimum over ``repeats`` short
    rounds of ``number`` publishes (on a shared machine the minimum is the round no
    other process interrupted)."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            step()
            sched.run()
        runs.append((time.perf_counter() - t0) / number * 1e6)
    return min(runs)


@contextlib.contextmanager
def checks_off() -> Iterator[None]:
    """Patch the issue-13 data model checks out (for --ab)."""
    from realtime_lab.core import membership, outbox
    from realtime_lab.protocol import codec, msgpack_codec

    saved = (codec.json_text_suspect, membership.check_value, msgpack_codec.check_message,
             outbox.FanOut.prepare)
    codec.json_text_suspect = lambda text: False  # type: ignore[assignment]
    membership.check_value = lambda *a, **k: None  # type: ignore[assignment]
    msgpack_codec.check_message = lambda *a, **k: None  # type: ignore[assignment]
    outbox.FanOut.prepare = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        (codec.json_text_suspect, membership.check_value, msgpack_codec.check_message,
         outbox.FanOut.prepare) = saved  # type: ignore[method-assign]


def ab(steps: dict[str, Callable[[], Any]], sched: Any, number: int,
       repeats: int) -> dict[str, tuple[float, float]]:
    """Per step: (checks on, checks off) microseconds, the best of interleaved rounds."""
    on: dict[str, list[float]] = {k: [] for k in steps}
    off: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            on[key].append(per_publish(step, sched, number, 1))
            with checks_off():
                off[key].append(per_publish(step, sched, number, 1))
    return {k: (min(on[k]), min(off[k])) for k in steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--number", type=int, default=50, help="publishes per round")
    parser.add_argument("--repeats", type=int, default=200, help="rounds (the minimum counts)")
    parser.add_argument("--ab", action="store_true",
                        help="checks on vs patched out, interleaved (this checkout only)")
    args = parser.parse_args(argv)
    import msgpack

    hub, sched, publisher, binary = build(args.subscribers)
    if args.ab:
        print(f"us per publish to {args.subscribers} JSON subscribers, data model checks "
              f"on / off (best of {args.repeats} interleaved rounds of {args.number})")
        print(f"{'payload':<12}{'bytes':>7}" + "".join(
            f"{m + ' on':>13}{'off':>8}{'ratio':>7}" for m in ("json", "msgpack", "server")))
    else:
        print(f"us per publish to {args.subscribers} JSON subscribers "
              f"(best of {args.repeats} rounds of {args.number})")
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

        if args.ab:
            got = ab({"json": json_step, "msgpack": msgpack_step, "server": server_step},
                     sched, args.number, args.repeats)
            print(f"{name:<12}{len(text.encode()):>7}" + "".join(
                f"{on:>13.2f}{off:>8.2f}{on / off:>7.3f}" for on, off in got.values()))
            continue
        j = per_publish(json_step, sched, args.number, args.repeats)
        m = per_publish(msgpack_step, sched, args.number, args.repeats)
        s = per_publish(server_step, sched, args.number, args.repeats)
        print(f"{name:<12}{len(text.encode()):>7}{j:>9.2f}{m:>9.2f}{s:>9.2f}")
    assert hub.stats.errors_sent == 0, "a benchmark publish was refused"


if __name__ == "__main__":
    main()

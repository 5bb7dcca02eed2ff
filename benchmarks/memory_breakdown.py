"""Where the bytes of an idle WebSocket connection go (issue 7, target 4).

``python -m benchmarks.memory_breakdown [-n 2000] [--server realtime_lab|tornado]``
``python -m benchmarks.memory_breakdown --hold -n 10000`` (hold n subscribed
connections in this process, broadcast one message, count who got it)
``python -m benchmarks.memory_breakdown --subscribe [--presence] -n 2000`` (each
connection also subscribes to one channel, with presence on or off: the cost of a
subscription and of a presence member, issue 16 point 3)

The server runs in this process (so its heap can be inspected); the clients run
in a child process (``benchmarks.loadgen``'s minimal client, each connection
waits for its ``welcome``). Three measurements, each over ``-n`` connections
opened after 20 warm-up connections:

1. **RSS**: server RSS growth / n, tracemalloc off (as in ``benchmarks.run``).
2. **tracemalloc** (a fresh server, same process): the traced growth / n, grouped
   by file and line and by file; and a census of the objects the garbage
   collector tracks, by type (count and ``sys.getsizeof`` per connection).
3. **One connection's object graph**, split into parts (realtime_lab: Session,
   pump, sans-I/O connection, socket; Tornado: handler, request, IOStream,
   protocol, reader coroutines): objects reachable from connection A but not
   from connection B, walked from each part's root without entering another
   part, summed with ``sys.getsizeof``.

RSS minus the traced bytes is what Python's allocators keep beyond the
objects (pymalloc pools and arenas, glibc malloc headers and fragmentation).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks.loadgen import Counters, WSClient, open_clients, raise_nofile_limit

HOST = "127.0.0.1"
WARMUP = 20
_SHARED_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                 types.CodeType)

# ------------------------------------------------------------------ client process


async def _client_main(port: int) -> None:
    """Child: on each ``open N`` line from stdin open N idle clients, answer ``ok``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    counters = Counters()
    clients: list[WSClient] = []
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] not in ("open", "subscribe", "expect"):
            break
        if line[0] == "expect":  # wait until every client counted one message more
            counters.expected = counters.received + len(clients)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(counters.done.wait(), float(line[1]))
            counts = [c.count for c in clients if c.counting]  # the subscribed ones
            print(f"subscribed {len(counts)} got {sum(counts)} min {min(counts, default=0)} "
                  f"open {sum(_is_open(c) for c in clients)}", flush=True)
            continue
        clients += await open_clients(int(line[1]), port, counters, 300.0,
                                      subscribe=line[0] == "subscribe")
        print("ok", flush=True)
    for client in clients:
        client.close()


def _is_open(client: WSClient) -> bool:
    transport = client.transport
    return transport is not None and not transport.is_closing()


class Clients:
    """The client child process, driven over its stdin/stdout."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory_breakdown", "--client", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer: str = await asyncio.to_thread(self.proc.stdout.readline)
        if not answer:
            raise RuntimeError(f"client process failed on {line!r}")
        return answer.strip()

    async def open(self, count: int, *, subscribe: bool = False) -> None:
        """Open ``count`` idle connections (each subscribed to one channel if asked)."""
        answer = await self.command(f"{'subscribe' if subscribe else 'open'} {count}")
        if answer != "ok":
            raise RuntimeError(f"client process failed: {answer!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    port: int
    stop: Callable[[], Awaitable[None]]
    connections: Callable[[], list[Any]]  # one root object per open connection
    hub: Any = None


@dataclass(frozen=True)
class Load:
    """What each measured connection does: only connect, or also subscribe to one
    channel (with presence on that channel, or not)."""

    subscribe: bool = False
    presence: bool = False

    def args(self) -> list[str]:
        return [*(["--subscribe"] if self.subscribe else []),
                *(["--presence"] if self.presence else [])]

    def __str__(self) -> str:
        return ("idle" if not self.subscribe
                else "subscribed, presence on" if self.presence else "subscribed")


async def start_server(kind: str, load: Load = Load()) -> Server:
    """realtime_lab as in benchmarks/servers/realtime_lab_server.py, or plain Tornado."""
    if kind == "realtime_lab":
        import realtime_lab
        from realtime_lab.transports.pump import SocketPump

        server = await realtime_lab.serve(
            host=HOST, port=0, presence_channels="*" if load.presence else None,
            max_outbound_bytes=64 << 20, max_connections_per_ip=100_000)
        return Server(server.port, server.stop, lambda: _instances(SocketPump), server.hub)
    from benchmarks.servers import tornado_server

    port, stop = await tornado_server.start(argparse.Namespace())
    return Server(port, stop, lambda: _instances(tornado_server.FanoutHandler))


def _instances(cls: type) -> list[Any]:
    return [o for o in gc.get_objects() if type(o) is cls]


# ------------------------------------------------------------------ census


def census() -> dict[str, tuple[int, int]]:
    """Type name -> [count, bytes] over the objects gc tracks plus their untracked leaves."""
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    seen: set[int] = set()
    objects = gc.get_objects()
    for obj in objects:
        seen.add(id(obj))
    seen.add(id(seen))
    seen.add(id(objects))
    for obj in objects:
        if id(obj) in (id(seen), id(objects), id(out)):
            continue
        row = out[_type_name(obj)]
        row[0] += 1
        row[1] += sys.getsizeof(obj)
        for ref in gc.get_referents(obj):
            if id(ref) in seen or gc.is_tracked(ref) or isinstance(ref, _SHARED_TYPES):
                continue
            seen.add(id(ref))
            leaf = out[_type_name(ref)]
            leaf[0] += 1
            leaf[1] += sys.getsizeof(ref)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _type_name(obj: object) -> str:
    cls = type(obj)
    mod = cls.__module__
    return cls.__qualname__ if mod in ("builtins", None) else f"{mod}.{cls.__qualname__}"


# ------------------------------------------------------------------ object graph


def _reach(roots: Iterable[object], stop: set[int]) -> dict[int, object]:
    """Objects reachable from ``roots`` without entering ``stop`` or shared kinds."""
    found: dict[int, object] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        key = id(obj)
        if key in found or key in stop or isinstance(obj, _SHARED_TYPES):
            continue
        found[key] = obj
        todo.extend(gc.get_referents(obj))
    return found


def _parts(root: Any, kind: str) -> list[tuple[str, list[object]]]:
    """The named parts of one connection, each with its root objects (walk order)."""
    if kind == "realtime_lab":  # root: the SocketPump (Tornado keeps nothing after the 101)
        return [("Session (+ OutboundQueue, SessionStats, sets, dicts)", [root.session]),
                ("SocketPump (+ SendBuffer when backlogged)", [root]),
                ("ServerConnection (sans-I/O protocol state)", [root.conn]),
                ("socket object", [root.sock])]
    handler = root
    conn = handler.ws_connection
    stream = getattr(conn, "stream", None)
    sock = getattr(stream, "socket", None)
    request = handler.request
    read_future = getattr(stream, "_read_future", None)
    parts: list[tuple[str, list[object]]] = [
        ("reader: pending read Future, Task, coroutine frames", [read_future]),
        ("WebSocket protocol object", [conn]),
        ("IOStream (+ buffers)", [stream]),
        ("socket object", [sock]),
        ("HTTPServerRequest (+ headers, arguments)", [request]),
        ("HTTP1Connection (+ context)", [getattr(request, "connection", None)]),
        ("RequestHandler (+ _headers, ui, _write_buffer)", [handler]),
    ]
    return [(name, [r for r in roots if r is not None]) for name, roots in parts]


def _loop_roots(root: Any, kind: str) -> list[object]:
    """What the event loop keeps for this connection's fd (selector key, handlers)."""
    from tornado.ioloop import IOLoop

    if kind == "realtime_lab":
        sock = root.sock
    else:
        stream = root.ws_connection.stream if root.ws_connection else None
        sock = getattr(stream, "socket", None)
    if sock is None or sock.fileno() < 0:
        return []
    fd = sock.fileno()
    ioloop: Any = IOLoop.current()
    roots: list[object] = []
    entry = getattr(ioloop, "handlers", {}).get(fd)
    if entry is not None:
        roots.append(entry)
    loop: Any = asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        with contextlib.suppress(KeyError):
            roots.append(selector.get_key(fd))
    return roots


def graph_breakdown(conns: list[Any], kind: str, hub: Any) -> list[tuple[str, int, int]]:
    """Bytes per part of one connection: (part, bytes, objects)."""
    a, b = conns[len(conns) // 2], conns[len(conns) // 2 + 1]
    loop = asyncio.get_running_loop()
    from tornado.ioloop import IOLoop

    stop = {id(x) for x in (loop, IOLoop.current(), hub, handler_app(a), gc.garbage)}
    # objects shared by connections: whatever connection B also reaches
    shared_b = _reach([*(r for _, roots in _parts(b, kind) for r in roots),
                       *_loop_roots(b, kind)], stop)
    parts = _parts(a, kind) + [("event loop registration (selector key, handler)",
                                _loop_roots(a, kind))]
    roots = {id(r) for _, rs in parts for r in rs}
    claimed: set[int] = set()
    rows: list[tuple[str, int, int]] = []
    for name, rs in parts:
        blocked = stop | set(shared_b) | claimed | (roots - {id(r) for r in rs})
        objs = _reach(rs, blocked)
        claimed |= set(objs)
        rows.append((name, sum(sys.getsizeof(o) for o in objs.values()), len(objs)))
    return rows


def handler_app(root: Any) -> Any:
    return getattr(root, "application", None)


# ------------------------------------------------------------------ the run


@dataclass
class Report:
    server: str
    connections: int
    load: str = "idle"
    rss_per_connection: float = 0.0
    traced_per_connection: float = 0.0
    by_line: list[tuple[str, float, float]] = field(default_factory=list)
    by_file: list[tuple[str, float, float]] = field(default_factory=list)
    by_type: list[tuple[str, float, float]] = field(default_factory=list)
    parts: list[tuple[str, int, int]] = field(default_factory=list)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def _wait_closed(server: Server, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while server.connections() and loop.time() < end:
        await asyncio.sleep(0.1)
        gc.collect()


async def measure_rss(kind: str, n: int, load: Load = Load()) -> float:
    server = await start_server(kind, load)
    clients = Clients(server.port)
    try:
        await clients.open(WARMUP, subscribe=load.subscribe)
        await asyncio.sleep(0.5)
        before = rss()
        await clients.open(n, subscribe=load.subscribe)
        await asyncio.sleep(1.0)
        after = rss()
    finally:
        clients.close()
        await _wait_closed(server)
        await server.stop()
    return (after - before) / n


def _stats(snapshot: tracemalloc.Snapshot, key: str) -> dict[str, tuple[int, int]]:
    """Traced (bytes, blocks) per file:line or per file, as plain tuples."""
    out: dict[str, tuple[int, int]] = {}
    for stat in snapshot.statistics(key):
        frame = stat.traceback[0]
        where = _short(frame.filename) + (f":{frame.lineno}" if key == "lineno" else "")
        size, count = out.get(where, (0, 0))
        out[where] = (size + stat.size, count + stat.count)
    return out


def _growth(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
            n: int) -> list[tuple[str, float, float]]:
    rows = [(k, (s - before.get(k, (0, 0))[0]) / n, (c - before.get(k, (0, 0))[1]) / n)
            for k, (s, c) in after.items()]
    return sorted(rows, key=lambda r: -r[1])


async def measure_traced(kind: str, n: int, report: Report, load: Load = Load()) -> None:
    """tracemalloc growth by line and file, gc census by type, one connection's graph."""
    tracemalloc.start(1)
    server = await start_server(kind, load)
    clients = Clients(server.port)
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    try:
        await clients.open(WARMUP, subscribe=load.subscribe)
        await asyncio.sleep(0.5)
        gc.collect()
        types1 = census()
        snap = tracemalloc.take_snapshot().filter_traces(filters)
        lines1, files1 = _stats(snap, "lineno"), _stats(snap, "filename")
        del snap  # its traces are tuples: keep them out of the second census
        await clients.open(n, subscribe=load.subscribe)
        await asyncio.sleep(1.0)
        gc.collect()
        types2 = census()
        snap = tracemalloc.take_snapshot().filter_traces(filters)
        lines2, files2 = _stats(snap, "lineno"), _stats(snap, "filename")
        del snap
        report.parts = graph_breakdown(server.connections(), kind, server.hub)
    finally:
        clients.close()
        await _wait_closed(server)
        await server.stop()
        tracemalloc.stop()
    report.by_line = _growth(lines1, lines2, n)[:30]
    report.by_file = _growth(files1, files2, n)[:15]
    report.traced_per_connection = sum(r[1] for r in _growth(files1, files2, n))
    rows = []
    for name, (count, size) in types2.items():
        c0, s0 = types1.get(name, (0, 0))
        if count - c0 >= n // 2:
            rows.append((name, (size - s0) / n, (count - c0) / n))
    report.by_type = sorted(rows, key=lambda r: -r[1])


def _short(path: str) -> str:
    for marker in ("site-packages/", "/realtime_lab/", "/lib/python3"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker):] if marker != "/realtime_lab/" else path[i + 1:]
    return path


def print_report(r: Report) -> None:
    p = print
    p(f"\n== {r.server}: {r.connections} connections, {r.load} ==")
    p(f"RSS growth per connection:          {r.rss_per_connection:8.0f} B "
      f"({r.rss_per_connection / 1024:.1f} KiB)")
    p(f"tracemalloc growth per connection:  {r.traced_per_connection:8.0f} B")
    untraced = r.rss_per_connection - r.traced_per_connection
    p(f"not traced (allocator overhead):    {untraced:8.0f} B")
    p("\n-- one connection's object graph (sys.getsizeof, parts walked in this order) --")
    total = 0
    for name, size, count in r.parts:
        total += size
        p(f"{size:7d} B {count:4d} objects  {name}")
    p(f"{total:7d} B total")
    p("\n-- tracemalloc by line (bytes / connection, blocks / connection) --")
    for where, size, count in r.by_line:
        p(f"{size:8.1f} {count:6.2f}  {where}")
    p("\n-- tracemalloc by file --")
    for where, size, count in r.by_file[:15]:
        p(f"{size:8.1f} {count:6.2f}  {where}")
    p("\n-- objects by type (gc census; sys.getsizeof bytes / connection, count / connection) --")
    for name, size, count in r.by_type[:40]:
        p(f"{size:8.1f} {count:6.2f}  {name}")


async def hold(n: int) -> dict[str, Any]:
    """``n`` subscribed connections held by this process, one broadcast to all of them."""
    import realtime_lab

    server = await realtime_lab.serve(host=HOST, port=0, presence_channels=None,
                                      max_outbound_bytes=64 << 20,
                                      max_connections_per_ip=100_000)
    clients = Clients(server.port)
    loop = asyncio.get_running_loop()
    try:
        await clients.open(WARMUP)
        await asyncio.sleep(0.5)
        before = rss()
        started = loop.time()
        await clients.open(n, subscribe=True)
        opened = loop.time() - started
        await asyncio.sleep(1.0)
        after = rss()
        sessions = len(server.hub.sessions)
        recipients = server.publish("bench", {"hold": n})
        answer = await clients.command("expect 60")
    finally:
        clients.close()
        await server.stop()
    return {"connections": n, "sessions": sessions, "recipients": recipients,
            "open_seconds": round(opened, 1), "rss_per_connection": (after - before) / n,
            "rss_mib": round(after / 2**20, 1), "clients": answer}


async def run_phase(kind: str, n: int, phase: str, load: Load = Load()) -> Report:
    report = Report(kind, n, str(load))
    if phase == "rss":
        report.rss_per_connection = await measure_rss(kind, n, load)
    else:
        await measure_traced(kind, n, report, load)
    return report


def run(kind: str, n: int, load: Load = Load()) -> Report:
    """Both phases, each in a fresh process (RSS never shrinks back within a process)."""
    report = Report(kind, n, str(load))
    for phase in ("rss", "trace"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_breakdown", "--phase", phase,
             "--server", kind, "-n", str(n), *load.args()],
            check=True, stdout=subprocess.PIPE, text=True, timeout=1200).stdout
        got = json.loads(out.strip().splitlines()[-1])
        if phase == "rss":
            report.rss_per_connection = got["rss_per_connection"]
        else:
            for key in ("traced_per_connection", "by_line", "by_file", "by_type", "parts"):
                setattr(report, key, got[key])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=2000)
    parser.add_argument("--server", choices=("realtime_lab", "tornado"), action="append")
    parser.add_argument("--json", type=str, default=None, help="also write the report here")
    parser.add_argument("--hold", action="store_true",
                        help="only hold n subscribed connections and broadcast once to them")
    parser.add_argument("--subscribe", action="store_true",
                        help="each connection subscribes to one channel (presence off)")
    parser.add_argument("--presence", action="store_true",
                        help="each connection subscribes to one presence channel (realtime_lab)")
    parser.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("rss", "trace"), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_nofile_limit(3 * args.connections + 1024)
    if args.client is not None:
        asyncio.run(_client_main(args.client))
        return 0
    if args.hold:
        print(json.dumps(asyncio.run(hold(args.connections))))
        return 0
    kinds = args.server or ["realtime_lab"]
    load = Load(subscribe=args.subscribe or args.presence, presence=args.presence)
    if args.phase is not None:
        report = asyncio.run(run_phase(kinds[0], args.connections, args.phase, load))
        print(json.dumps(report.__dict__))
        return 0
    reports = []
    for kind in kinds:
        report = run(kind, args.connections, load)
        print_report(report)
        reports.append(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in reports], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

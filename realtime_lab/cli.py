"""The command line: ``realtime-lab serve`` and ``realtime-lab demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
from collections.abc import Sequence

import tornado

from realtime_lab._version import __version__
from realtime_lab.core.options import ServerOptions
from realtime_lab.errors import MissingDependency, PortInUseError
from realtime_lab.shutdown import ShutdownSignals

DESCRIPTION = """\
realtime_lab: a realtime WebSocket server on Tornado (channels, presence,
heartbeat) that is also a lab you can watch and measure.

Both commands stop gracefully on SIGTERM or SIGINT (Ctrl-C): clients are closed with
1001 (going away), what was recorded is written, and the exit status is 0.
"""

EPILOG = """\
examples:
  realtime-lab serve --port 8765
  realtime-lab serve --host 0.0.0.0 --broker redis://127.0.0.1:6379/0 --metrics
  realtime-lab demo --duration 60 --clients 30
  python -m realtime_lab --version

docs: docs/reference.md ("Command line") and docs/deploy.md
"""


def version_line() -> str:
    """What ``--version`` prints: this package's, Tornado's and Python's versions."""
    return (f"realtime-lab {__version__} (tornado {tornado.version}, "
            f"Python {platform.python_version()})")


#: Options given as ``--flag VALUE``: (flag, type, metavar, help; the default is appended).
#: Each flag names the ServerOptions field it sets (``--max-connections`` ->
#: ``max_connections``), and its default is that field's default.
VALUE_OPTIONS: tuple[tuple[str, type, str, str], ...] = (
    ("--heartbeat-interval", float, "SECONDS", "seconds between the server's pings to each "
                                               "client"),
    ("--heartbeat-timeout", float, "SECONDS", "seconds a client has to answer a ping before it "
                                              "is closed with 4101"),
    ("--max-connections", int, "N", "open connections in total; more are refused with 4103"),
    ("--max-connections-per-ip", int, "N", "open connections from one client IP; more are "
                                           "refused with 4104"),
    ("--max-message-bytes", int, "BYTES", "largest inbound message or HTTP body; larger "
                                          "messages close the connection with 1009"),
    ("--idle-timeout", float, "SECONDS", "close clients silent for this many seconds with "
                                         "4105"),
    ("--max-message-fragments", int, "FRAMES", "most frames one inbound message may have; "
                                               "more close the connection with 1009"),
    ("--handshake-timeout", float, "SECONDS", "time to send a complete HTTP request head, "
                                              "the WebSocket upgrade included"),
    ("--http-body-timeout", float, "SECONDS", "time to send a whole HTTP request body"),
    ("--max-http-header-bytes", int, "BYTES", "largest HTTP request head"),
    ("--close-flush-timeout", float, "SECONDS", "time a client the server closes (a slow "
                                                "consumer too) has to read up to its close "
                                                "frame"),
    ("--presence-batch-window", float, "SECONDS", "seconds over which a channel's presence "
                                                  "joins, leaves and updates are merged into "
                                                  "one diff; 0 sends each at once"),
    ("--presence-full-limit", int, "MEMBERS", "members above which a full presence channel "
                                              "falls back to counts (or, with "
                                              "--presence-over-limit refuse, refuses new "
                                              "members with presence_full)"),
    ("--presence-count-interval", float, "SECONDS", "seconds between two presence_count "
                                                    "messages of a channel in counts mode"),
)
#: Options with a fixed set of values: flag, choices, help.
CHOICE_OPTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("--presence-mode", ("full", "counts", "off"),
     "presence of every channel: full (member lists and diffs), counts (member counts "
     "only) or off"),
    ("--presence-over-limit", ("counts", "refuse"),
     "what a full presence channel does past --presence-full-limit"),
)


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _add_server_args(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 for every interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to bind, 0 for any free port (default {default_port})")
    defaults = ServerOptions()
    for flag, kind, metavar, text in VALUE_OPTIONS:
        default = getattr(defaults, _field(flag))
        shown = "never" if default is None else f"{default:g}"
        parser.add_argument(flag, type=kind, default=default, metavar=metavar,
                            help=f"{text} (default {shown})")
    for flag, choices, text in CHOICE_OPTIONS:
        default = getattr(defaults, _field(flag))
        parser.add_argument(flag, choices=choices, default=default,
                            help=f"{text} (default {default})")
    parser.add_argument("--api-token", default=None, metavar="TOKEN",
                        help="enable POST /api/channels/{name}/messages with this bearer token; "
                             "it also guards /metrics")
    parser.add_argument("--no-client-publish", action="store_true",
                        help="refuse publish requests from clients (server-side publish still "
                             "works)")
    parser.add_argument("--allowed-origin", action="append", default=None, metavar="ORIGIN",
                        dest="allowed_origins",
                        help="allow browsers from this Origin (repeat; wildcards like "
                             "https://*.example.org); default: same origin only")
    parser.add_argument("--allowed-host", action="append", default=None, metavar="HOST",
                        dest="allowed_hosts",
                        help="answer requests for this Host (repeat; wildcards like "
                             "*.example.org; * for any); default: loopback names only "
                             "when listening on loopback, any name otherwise")
    parser.add_argument("--token-secret", default=None, metavar="SECRET",
                        help="require an HMAC connect token signed with this secret")
    parser.add_argument("--certfile", default=None, metavar="PEM",
                        help="PEM certificate: serve wss:// and https:// (needs --keyfile)")
    parser.add_argument("--keyfile", default=None, metavar="PEM",
                        help="PEM private key for --certfile")
    parser.add_argument("--http2", action="store_true",
                        help="also serve HTTP/2 on the same port: h2 by ALPN with --certfile, "
                             "h2c (prior knowledge) without; WebSockets over HTTP/2 streams "
                             "(RFC 8441). Needs pip install 'realtime_lab[http2]'")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() connection objects so full garbage collections stay "
                             "short with many connections")
    parser.add_argument("--metrics", action="store_true",
                        help="serve Prometheus metrics at GET /metrics (needs "
                             "pip install 'realtime_lab[prometheus]'; guarded by --api-token "
                             "when one is set)")
    parser.add_argument("--pusher-app", action="append", default=None,
                        metavar="APP_ID:KEY:SECRET", dest="pusher_apps",
                        help="speak the Pusher Channels protocol to this app's clients "
                             "(pusher-js at /app/KEY) and server SDKs (/apps/APP_ID/...); "
                             "repeat for several apps")
    parser.add_argument("--pusher-webhook", action="append", default=None, metavar="URL",
                        dest="pusher_webhooks",
                        help="POST every Pusher app's webhooks (channel_occupied, "
                             "channel_vacated, member_added, member_removed, client_event; "
                             "signed) to this URL; repeat for several")


def _options(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        **{_field(flag): getattr(args, _field(flag)) for flag, *_ in VALUE_OPTIONS},
        **{_field(flag): getattr(args, _field(flag)) for flag, *_ in CHOICE_OPTIONS},
        api_token=args.api_token,
        client_publish=not args.no_client_publish,
        allowed_origins=tuple(args.allowed_origins) if args.allowed_origins else None,
        allowed_hosts=tuple(args.allowed_hosts) if args.allowed_hosts else None,
        token_secret=args.token_secret,
        certfile=args.certfile,
        keyfile=args.keyfile,
        http2=args.http2,
        gc_freeze=args.gc_freeze,
        metrics=args.metrics,
        pusher_apps=tuple(args.pusher_apps or ()),
        pusher_webhooks=tuple(args.pusher_webhooks or ()),
    )


def build_parser(prog: str = "realtime-lab") -> argparse.ArgumentParser:
    """The argument parser of ``realtime-lab`` (and ``python -m realtime_lab``)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the versions of realtime_lab, Tornado and Python, and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    serve_p = sub.add_parser(
        "serve", help="run a server until Ctrl-C or SIGTERM",
        description="Run a realtime_lab server until Ctrl-C (SIGINT) or SIGTERM; then close "
                    "every client with 1001 (going away) and exit with status 0.")
    _add_server_args(serve_p, 8765)
    serve_p.add_argument("--broker", default=None, metavar="URL",
                         help="link several servers: redis://HOST:PORT/DB "
                              "(options in the query: ?node_ttl=10&namespace=rl)")
    demo_p = sub.add_parser(
        "demo", help="a server with simulated clients, a live summary and a recorded report",
        description="Run a server with simulated clients chatting in rooms, show a live "
                    "summary, and write the recorded metrics (CSV tables and a PNG report) "
                    "under --out. SIGTERM or Ctrl-C ends the run early; what was recorded "
                    "is still written.")
    _add_server_args(demo_p, 8765)
    demo_p.add_argument("--duration", type=float, default=20.0, metavar="SECONDS",
                        help="seconds to run (default 20)")
    demo_p.add_argument("--clients", type=int, default=12, metavar="N",
                        help="simulated clients (default 12)")
    demo_p.add_argument("--out", default="data", metavar="DIR",
                        help="folder for demo_metrics.csv and demo_run/ (default data)")
    return parser


async def _serve(args: argparse.Namespace, shutdown: ShutdownSignals) -> None:
    from realtime_lab.server import LabServer

    server = await LabServer(_options(args), host=args.host, port=args.port,
                             broker=getattr(args, "broker", None)).start()
    try:
        print(f"realtime_lab serving {server.url} (HTTP {server.http_url}); "
              "Ctrl-C or SIGTERM to stop", flush=True)
        if server.pusher is not None:
            keys = ", ".join(app.key for app in server.pusher.apps)
            print(f"Pusher clients: {server.http_url.replace('http', 'ws', 1)}/app/{{key}} "
                  f"(keys: {keys}); HTTP API {server.http_url}/apps/{{app_id}}", flush=True)
        sig = await shutdown.wait()
        print(f"{sig.name if sig else 'stop'} received: closing clients with 1001 "
              "(send it again to stop at once)", flush=True)
    finally:
        await server.stop()


async def _run(args: argparse.Namespace) -> ShutdownSignals:
    async with ShutdownSignals() as shutdown:
        if args.command == "serve":
            await _serve(args, shutdown)
        else:
            from realtime_lab.demo import run_demo

            await run_demo(_options(args), host=args.host, port=args.port,
                           duration=args.duration, clients=args.clients, out=args.out,
                           stop=shutdown.event)
    return shutdown


def main(argv: Sequence[str] | None = None, *, prog: str = "realtime-lab") -> int:
    """Run the command line; return the exit status (0, or 2 for a refused start)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        shutdown = asyncio.run(_run(args))
    except (PortInUseError, MissingDependency, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # where the loop has no signal handlers (Windows)
        print("\nstopped", file=sys.stderr)
        return 0
    except asyncio.CancelledError:  # a second signal cut the graceful stop short
        print("stopped without waiting for clients (second signal)", file=sys.stderr)
        return 1
    if shutdown.received is not None:
        print(f"stopped ({shutdown.received.name})", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``realtime-lab serve | demo``: the command-line entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from realtime_lab.core.options import ServerOptions
from realtime_lab.errors import PortInUseError


def _add_server_args(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to bind, 0 for any free port (default {default_port})")
    parser.add_argument("--heartbeat-interval", type=float,
                        default=ServerOptions.heartbeat_interval)
    parser.add_argument("--heartbeat-timeout", type=float, default=ServerOptions.heartbeat_timeout)
    parser.add_argument("--api-token", default=None,
                        help="enable POST /api/channels/{name}/messages with this bearer token")
    parser.add_argument("--no-client-publish", action="store_true",
                        help="refuse publish requests from clients")
    parser.add_argument("--allowed-origin", action="append", default=None, metavar="ORIGIN",
                        dest="allowed_origins",
                        help="allow browsers from this Origin (repeat; wildcards like "
                             "https://*.example.org); default: same origin only")
    parser.add_argument("--token-secret", default=None,
                        help="require an HMAC connect token signed with this secret")
    parser.add_argument("--max-connections", type=int, default=ServerOptions.max_connections)
    parser.add_argument("--max-connections-per-ip", type=int,
                        default=ServerOptions.max_connections_per_ip)
    parser.add_argument("--max-message-bytes", type=int, default=ServerOptions.max_message_bytes)
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="close clients silent for this many seconds (default: never)")
    parser.add_argument("--certfile", default=None, help="PEM certificate: serve wss:// (TLS)")
    parser.add_argument("--keyfile", default=None, help="PEM private key for --certfile")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() connection objects so full garbage collections stay "
                             "short with many connections (ServerOptions.gc_freeze)")


def _options(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        api_token=args.api_token,
        client_publish=not args.no_client_publish,
        allowed_origins=tuple(args.allowed_origins) if args.allowed_origins else None,
        token_secret=args.token_secret,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        max_message_bytes=args.max_message_bytes,
        idle_timeout=args.idle_timeout,
        certfile=args.certfile,
        keyfile=args.keyfile,
        gc_freeze=args.gc_freeze,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime-lab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run a server until Ctrl-C")
    _add_server_args(serve_p, 8765)
    serve_p.add_argument("--broker", default=None, metavar="URL",
                         help="link several servers: redis://HOST:PORT/DB "
                              "(options in the query: ?node_ttl=10&namespace=rl)")
    demo_p = sub.add_parser("demo", help="a server with simulated clients and a live summary")
    _add_server_args(demo_p, 8765)
    demo_p.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo_p.add_argument("--clients", type=int, default=12, help="simulated clients (default 12)")
    demo_p.add_argument("--out", default="data", help="folder for the metrics CSV (default data)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from realtime_lab.server import LabServer

    server = await LabServer(_options(args), host=args.host, port=args.port,
                             broker=getattr(args, "broker", None)).start()
    print(f"realtime_lab serving {server.url} (HTTP {server.http_url}); Ctrl-C to stop",
          flush=True)
    await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            asyncio.run(_serve(args))
        else:
            from realtime_lab.demo import run_demo

            asyncio.run(run_demo(_options(args), host=args.host, port=args.port,
                                 duration=args.duration, clients=args.clients, out=args.out))
    except (PortInUseError, ValueError) as exc:
        print(f"realtime-lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

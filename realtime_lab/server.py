"""LabServer: builds the Tornado application and runs it on the current event loop.

In a notebook, ``server = await realtime_lab.serve(port=0)`` starts on the
kernel's own loop and returns at once; from a script or the CLI the same call
runs inside ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback
from tornado.log import access_log
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from realtime_lab.core.events import Event, EventStream, FilterSpec, Subscription
from realtime_lab.core.hooks import Hooks
from realtime_lab.core.hub import Hub
from realtime_lab.core.options import ServerOptions
from realtime_lab.errors import PortInUseError, ServerNotRunning
from realtime_lab.gc_freeze import GcFreezer
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.transports.accept import AcceptLoop, EdgeHTTPServer
from realtime_lab.transports.host_check import HostGuard, effective_allowed_hosts
from realtime_lab.transports.http_api import (
    ChannelHandler,
    ChannelMessagesHandler,
    ChannelsHandler,
    ClusterHandler,
    HealthHandler,
)
from realtime_lab.transports.static_files import LabStaticFileHandler
from realtime_lab.transports.tornado_ws import HubWebSocketHandler

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from realtime_lab.broker import BrokerBackplane
    from realtime_lab.inspection import ServerSnapshot
    from realtime_lab.instrument import Recorder
    from realtime_lab.pusher.adapter import PusherAdapter
    from realtime_lab.widgets import Dashboard

log = logging.getLogger("realtime_lab.server")

STATIC_DIR = Path(__file__).parent / "static"


class LabServer:
    """A realtime_lab server: a hub, a Tornado application and its listening sockets."""

    def __init__(self, options: ServerOptions | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, broker: Any = None, hooks: Hooks | None = None,
                 middleware: Sequence[object] = ()) -> None:
        self.options = options or ServerOptions()
        self.broker = broker  # None, "redis://...", an InMemoryBus or a Broker
        self.cluster: BrokerBackplane | None = None  # set by start() when broker is given
        self.host = host
        self.requested_port = port
        self.hub = Hub(self.options, hooks=hooks, middleware=middleware)
        #: The Pusher protocol's routes and webhooks (ServerOptions.pusher_apps; docs/pusher.md).
        self.pusher: PusherAdapter | None = None
        if self.options.pusher_apps:
            from realtime_lab.pusher.adapter import PusherAdapter

            self.pusher = PusherAdapter(self.hub)
        self.started_at = time.time()
        self._http: EdgeHTTPServer | None = None
        self._listener: AcceptLoop | None = None  # accepts on the listening sockets
        self._heartbeat: PeriodicCallback | None = None
        self._port: int | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._gc_freezer: GcFreezer | None = None  # ServerOptions.gc_freeze
        self._gc_check: PeriodicCallback | None = None
        #: The prometheus_client registry served at GET /metrics (ServerOptions.metrics),
        #: else None. Built here, so a missing prometheus_client fails before binding.
        self.metrics_registry: CollectorRegistry | None = metrics_registry(self)

    # ------------------------------------------------------------------ properties

    @property
    def running(self) -> bool:
        return self._http is not None and self._stopping is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerNotRunning("the server has not been started; await server.start()")
        return self._port

    @property
    def url(self) -> str:
        """The WebSocket endpoint, ``ws://HOST:PORT/ws``."""
        scheme = "wss" if self.options.certfile else "ws"
        return f"{scheme}://{self._url_host()}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.options.certfile else "http"
        return f"{scheme}://{self._url_host()}:{self.port}"

    def _url_host(self) -> str:
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> Application:
        hub_args = {"hub": self.hub}
        api_args = {"hub": self.hub, "started_at": self.started_at}
        app = Application(
            [
                (r"/ws", HubWebSocketHandler, hub_args),
                (r"/health", HealthHandler, api_args),
                (r"/api/channels", ChannelsHandler, api_args),
                (r"/api/cluster", ClusterHandler, api_args),
                (r"/api/channels/([^/]+)/messages", ChannelMessagesHandler, api_args),
                (r"/api/channels/([^/]+)", ChannelHandler, api_args),
                (r"/static/(.*)", LabStaticFileHandler, {"path": str(STATIC_DIR)}),
                (r"/()", LabStaticFileHandler,  # the demo room page (docs/client.md)
                 {"path": str(STATIC_DIR), "default_filename": "index.html"}),
            ],
            log_function=redacted_access_log,
        )
        if self.metrics_registry is not None:  # GET /metrics (docs/deploy.md)
            from realtime_lab.transports.metrics_http import MetricsHandler

            app.wildcard_router.add_rules([(r"/metrics", MetricsHandler, {
                "registry": self.metrics_registry, "token": self.options.api_token})])
        if self.pusher is not None:  # /app/{key}, /apps/{app_id}/... (docs/pusher.md)
            app.wildcard_router.add_rules(self.pusher.routes(self.started_at))
        if self.options.conformance_echo:  # /echo for Autobahn cases (tests/conformance)
            from realtime_lab.transports.tornado_ws import EchoHandler, compression_policy

            app.wildcard_router.add_rules(
                [(r"/echo", EchoHandler, {"policy": compression_policy(self.hub)})])
        return app

    async def start(self) -> LabServer:
        """Bind and start listening on the running event loop; return self."""
        if self._http is not None:
            raise RuntimeError("this server was already started; create a new LabServer")
        loop = asyncio.get_running_loop()
        self.hub.bind(loop)
        broker = None
        if self.broker is not None:
            from realtime_lab.broker import make_broker

            broker = make_broker(self.broker)
        try:
            sockets = bind_sockets(self.requested_port, address=self.host or None)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"cannot listen on {self.host}:{self.requested_port}: the port is already "
                    "in use (another server?). Stop it, choose another port, or use port=0."
                ) from None
            raise
        self._port = sockets[0].getsockname()[1]
        if broker is not None:  # join the cluster before the first client arrives
            from realtime_lab.broker import BrokerBackplane

            self.cluster = await BrokerBackplane(self.hub, broker).start()
        opts = self.options
        self._http = edge_http_server(self.make_app(), opts, sockets, self.hub)
        self._listener = accept_connections(self._http, sockets, opts, self.hub)
        period = max(0.02, min(opts.heartbeat_interval, opts.heartbeat_timeout,
                               opts.heartbeat_min_interval or math.inf,
                               opts.idle_timeout or math.inf,
                               opts.presence_idle_timeout or math.inf) / 4)
        self.hub.tick_period = period
        self._heartbeat = PeriodicCallback(self.hub.heartbeat_tick, period * 1000)
        self._heartbeat.start()
        if self.pusher is not None:
            self.pusher.start()
        if opts.gc_freeze:
            self._gc_freezer = GcFreezer(lambda: len(self.hub.sessions))
            self._gc_freezer.start()
            self._gc_check = PeriodicCallback(self._gc_freezer.check, 1000)
            self._gc_check.start()
        log.info("realtime_lab listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Stop listening, close every client with 1001 (going away). Idempotent."""
        if self._http is None:
            return
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            self._http.stop()
            if self._listener is not None:
                self._listener.stop()
            if self._heartbeat is not None:
                self._heartbeat.stop()
            if self._gc_check is not None:
                self._gc_check.stop()
            self.hub.close_all(CloseCode.GOING_AWAY, "server stopping")
            deadline = time.monotonic() + self.options.close_timeout
            while self.hub.sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await self._http.close_all_connections()
            for session in list(self.hub.sessions.values()):
                session.port.abort()  # a client that did not take its close frame in time
                self.hub.closed(session, CloseCode.GOING_AWAY, "server stopped")
            self.hub.presence_batch.close()  # nobody is left to tell
            self.hub.presence_modes.close()
            if self.cluster is not None:
                await self.cluster.stop()
            if self.pusher is not None:
                await self.pusher.stop()
        finally:
            if self._gc_freezer is not None:
                self._gc_freezer.stop()
            self._stopping.set_result(None)
        log.info("realtime_lab stopped")

    async def restart(self) -> LabServer:
        """Stop (clients get 1001, *going away*) and listen again on the same port.

        The lab's "restart the server" control. The same hub carries on: counters,
        event handlers (``server.on``), an attached recorder and channel history
        survive, which a process restart would lose; every connection, subscription
        and presence member is gone, so clients reconnect and subscribe again.
        """
        if self._port is None:
            raise ServerNotRunning("the server has not been started; await server.start()")
        self.requested_port = self._port
        await self.stop()
        self._http = None
        self._stopping = None
        self._heartbeat = self._gc_check = None
        self._gc_freezer = None
        self.cluster = None
        return await self.start()

    async def __aenter__(self) -> LabServer:
        if self._http is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until cancelled (Ctrl-C in the CLI), then stop cleanly."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ operations

    def publish(self, channel: str, data: Any, *, priority: str = "normal") -> int:
        """Publish from the server side; return the number of recipients."""
        return self.hub.publish(channel, data, priority=priority)

    def events(self, filter: FilterSpec = None, *, maxsize: int = 1000,
               **criteria: Any) -> EventStream:
        """A bounded stream of server events: ``async for event in server.events("presence.*")``.

        Criteria: a type glob (or an EventFilter, or a predicate) and ``types=``,
        ``channel=``, ``user=``, ``where=``. When full, the oldest event is dropped
        and counted in ``stream.dropped`` (docs/events.md).
        """
        return self.hub.bus.stream(filter, maxsize=maxsize, **criteria)

    def on(self, filter: FilterSpec, handler: Callable[[Event], object], *,
           priority: int = 0, **criteria: Any) -> Subscription:
        """Call ``handler(event)`` for matching events, higher ``priority`` first."""
        return self.hub.bus.subscribe(handler, filter, priority=priority, **criteria)

    def channels(self) -> list[dict[str, object]]:
        return self.hub.channel_list()

    def channel_info(self, name: str) -> dict[str, object] | None:
        """Counts and custom metadata of one channel (docs/channels.md)."""
        return self.hub.channel_info(name)

    def set_channel_metadata(self, name: str, values: dict[str, object], *,
                             replace: bool = False) -> dict[str, object]:
        """Merge (or replace) channel ``name``'s custom metadata; None values delete keys."""
        return self.hub.set_channel_metadata(name, values, replace=replace)

    def presence(self, channel: str) -> dict[str, dict[str, object]]:
        """Members of ``channel`` and their info (cluster-wide with a broker)."""
        return self.hub.presence(channel)

    def inspect(self, *, connections: bool | int = True) -> ServerSnapshot:
        """A read-only snapshot of this server: counters, queue totals and connections.

        ``connections``: True for every connection, an integer ``n`` for the queue
        totals and the ``n`` connections with the largest outbound queues, False for
        the counters alone (constant cost). See :mod:`realtime_lab.inspection`.
        """
        from realtime_lab.inspection import inspect

        return inspect(self.hub, connections=connections)

    def record(self, **options: Any) -> Recorder:
        """Start recording metrics (realtime_lab.instrument.Recorder options); return it."""
        from realtime_lab.instrument import Recorder

        return Recorder(self.hub, **options).start()

    def dashboard(self, **options: Any) -> Dashboard:
        """An ipywidgets dashboard of this server: channels, presence, live metrics."""
        from realtime_lab.widgets import Dashboard

        return Dashboard(self, **options)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<LabServer {where} connections={len(self.hub.sessions)}>"


async def serve(host: str = "127.0.0.1", port: int = 0, *,
                options: ServerOptions | None = None, broker: Any = None,
                hooks: Hooks | None = None, middleware: Sequence[object] = (),
                **option_values: Any) -> LabServer:
    """Start a server on the running event loop and return it at once.

    Options can be given as a :class:`ServerOptions` or as keyword arguments
    (``serve(port=0, heartbeat_interval=5)``). ``broker`` links several servers:
    ``"redis://HOST:PORT/0"`` or a shared ``realtime_lab.broker.InMemoryBus()``.
    ``hooks`` (realtime_lab.core.hooks.Hooks) and ``middleware`` (a list, first =
    outermost; realtime_lab.middleware) shape each message's way (docs/middleware.md).
    """
    opts = options or ServerOptions()
    if option_values:
        opts = opts.with_changes(**option_values)
    return await LabServer(opts, host=host, port=port, broker=broker, hooks=hooks,
                           middleware=middleware).start()


_SECRET_QUERY = re.compile(r"((?:^|[?&])token=)[^&\s]*")


def redacted_access_log(handler: RequestHandler) -> None:
    """Tornado's access log line, with ``?token=`` values replaced (connect tokens)."""
    status = handler.get_status()
    method = access_log.info if status < 400 else (
        access_log.warning if status < 500 else access_log.error)
    req = handler.request
    uri = _SECRET_QUERY.sub(r"\1<redacted>", req.uri or "")
    method("%d %s %s (%s) %.2fms", status, req.method, uri, req.remote_ip,
           1000.0 * req.request_time())


def metrics_registry(server: LabServer) -> CollectorRegistry | None:
    """The registry of ``GET /metrics`` when ``server.options.metrics`` is on, else None."""
    if not server.options.metrics:
        return None
    from realtime_lab.instrument.prometheus import server_registry

    return server_registry(server)


def edge_http_server(app: Application, options: ServerOptions,
                     sockets: Sequence[socket.socket], hub: Hub) -> EdgeHTTPServer:
    """Tornado's HTTP server with the edge limits of ``options`` (docs/security.md).

    Every request first passes the ``Host`` check (``allowed_hosts``; on loopback
    sockets only loopback names by default: DNS rebinding). Request heads must
    arrive within ``handshake_timeout`` (also the idle time allowed between two
    requests on a kept-alive connection) and be at most ``max_http_header_bytes``;
    bodies at most ``max_message_bytes``, within ``http_body_timeout``. Slower or
    larger requests are dropped.
    """
    guard = HostGuard(app, effective_allowed_hosts(options.allowed_hosts, sockets),
                      on_refused=lambda remote: hub.refused_handshake(
                          remote, 403, "forbidden_host", "allowed_hosts"))
    http = EdgeHTTPServer(guard, ssl_options=tls_context(options),
                          idle_connection_timeout=options.handshake_timeout,
                          max_header_size=options.max_http_header_bytes,
                          max_body_size=options.max_message_bytes,
                          body_timeout=options.http_body_timeout)
    if options.http2:  # docs/http2.md
        from realtime_lab.transports.http2 import H2Listener

        http.h2 = H2Listener(http, websockets=options.http2_websockets,
                             handshake_timeout=options.handshake_timeout,
                             max_header_bytes=options.max_http_header_bytes,
                             max_body_bytes=options.max_message_bytes)
    return http


def accept_connections(http: EdgeHTTPServer, sockets: Sequence[socket.socket],
                       options: ServerOptions, hub: Hub) -> AcceptLoop:
    """Accept on ``sockets`` for ``http``: a pause when out of descriptors (EMFILE), and
    connections not yet WebSockets counted against ``max_connections_per_ip``."""
    return AcceptLoop(
        http, max_per_ip=options.max_connections_per_ip,
        open_per_ip=lambda ip: hub.admission.per_ip.get(ip, 0),
        ssl_options=http.ssl_options,  # the context edge_http_server made
        on_refused=lambda ip: hub.refused_handshake(
            ip, CloseCode.IP_LIMIT, "too_many_connections_from_ip", "max_connections_per_ip"),
    ).start(sockets)


def tls_context(options: ServerOptions) -> ssl.SSLContext | None:
    """An SSL context from ``certfile``/``keyfile``, or None for plain TCP."""
    if options.certfile is None or options.keyfile is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(options.certfile, options.keyfile)
    if options.http2:  # ALPN: h2 or http/1.1 (docs/http2.md)
        from realtime_lab.transports.http2 import ALPN_PROTOCOLS

        ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx

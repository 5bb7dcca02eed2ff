"""Server options: every limit with its default in one place (docs/reference.md lists them)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from realtime_lab.protocol.deflate import CompressionPolicy, as_policy

DEFAULT_CHANNEL_PATTERN = r"[A-Za-z0-9_\-=@,.;:]+"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Options of a realtime_lab server. All are keyword-only and have defaults.

    Attributes:
        heartbeat_interval: seconds between server pings to each connection.
        heartbeat_timeout: seconds a connection has to answer a ping before it is
            closed with close code 4101 (heartbeat timeout).
        max_message_bytes: largest inbound message; larger frames close the
            connection with 1009 (message too big).
        max_message_fragments: most frames one inbound message may be split into
            (RFC 6455 fragmentation); a message in more closes the connection with
            1009. Memory per message is bounded by ``max_message_bytes`` anyway; this
            bounds the work one endless message of empty frames costs.
        max_outbound_bytes: bytes that may wait to be sent to one connection; a
            client that stops reading past this is closed with 4100 (slow consumer).
        max_subscriptions: channels one connection may be subscribed to at once.
        max_channel_length: longest channel name, in characters.
        channel_pattern: regular expression a whole channel name must match.
        client_publish: whether clients may publish to channels.
        presence_channels: glob (fnmatch) of channels that track presence and send
            presence_state / presence_diff; None turns presence off.
        echo_to_sender: whether a publisher subscribed to the channel receives its
            own message.
        api_token: bearer token for ``POST /api/channels/{name}/messages``; None
            disables the endpoint.
        close_timeout: seconds a client has to answer the server's close frame once
            it is written (then the TCP connection is dropped); ``stop()`` waits as
            long for every client to close cleanly.
        close_flush_timeout: seconds a connection the server closes has to read what
            was sent before its close frame (a slow consumer: the frames the kernel
            has not begun are dropped first); then the TCP connection is dropped.

    Outbound queue (docs/events.md):
        write_buffer_bytes: bytes handed to the transport per flush while it still
            holds unsent data; the rest waits in the priority queue, where control
            and high messages overtake bulk ones.
        droppable_priority: highest priority dropped (oldest first) under pressure
            before the connection is closed as a slow consumer ("low" by default;
            "none" never drops).
        fanout_slice_seconds, fanout_slice_min: a broadcast to at most
            ``fanout_slice_min`` subscribers (and a flush of at most that many
            connections) is done in the current loop turn; a larger one is done in
            slices of about ``fanout_slice_seconds`` per turn, so a huge group does
            not stall the loop (docs/performance.md). Tuning knobs; tests shrink them.
        fanout_flush_delay: while sliced fan-outs are being queued, connections
            are written when they end or after at most this many seconds, so each
            write carries many frames (0 writes after every slice).
        gc_freeze: ``gc.freeze()`` after start-up and as connections grow, so a full
            garbage collection does not walk every connection's objects (a
            120-230 ms pause at 10,000 connections). Process-wide, so off by default
            (a notebook kernel's own objects would be frozen too); see
            realtime_lab/gc_freeze.py and docs/performance.md.

    Security (docs/security.md; each refusal has its own code):
        allowed_origins: Origin values allowed at the handshake: exact
            (``"https://app.example.com"``) or wildcard (``"https://*.example.com"``,
            ``"*"``). None: same host as the request, or no Origin header (non-browser
            clients). Same-origin handshakes always pass (security.md, "Origins").
            A refused origin gets HTTP 403.
        allowed_hosts: ``Host`` header values every HTTP request and WebSocket upgrade
            must carry, against DNS rebinding: names (``"rt.example.com"``), wildcards
            (``"*.example.com"``) or ``"*"`` (no check); loopback names and addresses
            always pass. None: only loopback names and addresses when the server
            listens on loopback only, no check otherwise. Others get HTTP 403.
        max_connections: open connections in total; more are closed with 4103.
        max_connections_per_ip: open connections from one client IP; more get 4104.
        publish_channels: glob(s) of channels clients may publish to (``forbidden``).
        handshake_timeout: seconds a client has to send a complete HTTP request head
            (the WebSocket upgrade, or any HTTP request), counted from the TCP connect
            or from the end of the previous request on a kept-alive connection; then
            the connection is dropped.
        http_body_timeout: seconds a client has to send a whole HTTP request body
            (``POST``/``PATCH`` of the HTTP API) once its head arrived; a slower one is
            dropped. Bodies are at most ``max_message_bytes``.
        max_http_header_bytes: largest HTTP request head (request line and headers);
            a larger one is dropped.
        idle_timeout: seconds without any message from a client before it is closed
            with 4105; None (default) leaves idle but live clients alone.
        error_limit: ``(count, window)``: a connection that sends ``count`` invalid
            messages (bad JSON, unknown type, missing or bad fields...) within
            ``window`` seconds gets ``too_many_errors`` and is closed with 4008.
            Default ``(20, 10.0)``; None never closes for that.
        token_secret: HMAC secret; when set every connection needs a valid, unexpired
            ``?token=`` (realtime_lab.core.security.make_token) or is closed with 4001.
        token_verifier: callback ``token -> user id | dict | None`` used instead of
            (or besides) the HMAC check; None or an exception refuses with 4001.
        certfile, keyfile: PEM files; when set the server speaks TLS (wss://).
        http2: also serve HTTP/2 on the same port (needs ``realtime_lab[http2]``):
            h2 chosen by ALPN with TLS, h2c with prior knowledge without; WebSockets
            over HTTP/2 streams (RFC 8441). docs/http2.md.
        http2_websockets: announce SETTINGS_ENABLE_CONNECT_PROTOCOL and accept
            WebSockets on HTTP/2 streams; False refuses extended CONNECT with 400
            (browsers then open their WebSockets over HTTP/1.1).

    Channel authorization (docs/channels.md):
        channel_secret: HMAC secret of channel tokens
            (:func:`realtime_lab.sign_channel_token`); None: ``token_secret`` is used.
        authorizer: callback ``(session, channel, auth) -> verdict`` (sync or async)
            for private and presence channels: True allows, a dict allows and is the
            member data, anything else (False, None, ``Refuse``) refuses.
        channel_rules: :class:`~realtime_lab.core.authz.ChannelRule` s, first match
            wins. None: ``private-*`` and ``presence-*`` always need authorization
            (a channel token signed with ``channel_secret``/``token_secret``, or the
            ``authorizer``); with neither configured they are refused with
            ``channel_unauthorized``. ``()`` makes every channel public.
        subscribe_channel_info: send the channel's counts and custom metadata in
            ``subscribed`` as ``info`` (off by default).

    Pusher Channels protocol (docs/pusher.md):
        pusher_apps: apps whose Pusher clients and server SDKs the server speaks to,
            each a ``realtime_lab.pusher.PusherApp`` or an ``"APP_ID:KEY:SECRET"``
            string; non-empty: pusher-js connects at ``/app/{key}``, the HTTP API is
            at ``/apps/{app_id}/...``. Webhooks go to each app's ``webhooks`` URLs.
        pusher_webhooks: URLs that receive every Pusher app's webhooks (signed with
            each app's secret), besides the URLs in a ``PusherApp``'s own ``webhooks``.
        pusher_auth: callback ``(handler, socket_id, channel) -> verdict`` (sync or
            async) behind ``POST /pusher/auth``, the auth endpoint pusher-js calls
            for private and presence channels: True allows, a dict
            ``{"user_id": ..., "user_info": {...}}`` allows a presence member,
            anything else refuses (403). None: no such endpoint.
        pusher_user_auth: callback ``(handler, socket_id) -> user`` (sync or async)
            behind ``POST /pusher/user-auth``, the endpoint of pusher-js's
            ``signin()``: a dict with an ``id`` signs the user in, anything else
            refuses (403). None: no such endpoint.

    Presence (docs/presence.md):
        presence_states: the states a member may have; the first is the default
            (not sent on the wire).
        presence_details: exact ``connections`` counts (a diff with ``changed``
            when a member's count changes: a second tab opened or closed) and leave
            ``reason`` s in presence diffs (the default). False: the minimal wire of
            earlier versions (joins and leaves only; ``connections`` goes stale).
        presence_grace: seconds a member whose last connection closed is kept
            before its leave is announced; a reconnect within it emits nothing. 0:
            leave at once.
        presence_idle_timeout: seconds without a message from any of a member's
            connections before it moves to ``presence_idle_state``; None: never.
        presence_mode: how a channel that matches ``presence_channels`` shows
            presence when no channel rule says otherwise (``ChannelRule.presence``):
            ``full`` (members with states and metadata), ``counts`` (only the member
            count, in ``presence_count`` messages) or ``off``.
        presence_full_limit: members above which a full channel does
            ``presence_over_limit`` (``ChannelRule.presence_limit``).
        presence_over_limit: ``counts`` (the channel falls back to counts, and its
            subscribers get ``presence_mode``) or ``refuse`` (the join is refused
            with ``presence_full``) (``ChannelRule.over_limit``).
        presence_count_interval: seconds between two ``presence_count`` messages of
            a channel in counts mode (one is sent when the count changed).
        max_presence_members: members per presence channel in any mode
            (``presence_full``).
        max_presence_meta_bytes: encoded size of a member's metadata
            (``presence_meta_too_large``).
        max_presence_channel_meta_bytes: encoded size of the metadata of all the
            members of one channel together (on this server); a member whose new
            metadata would pass it is refused with ``presence_meta_full``.
        presence_page_bytes: a member list up to about this size goes to a new
            subscriber as one ``presence_state``; a larger one as ``presence_page``
            messages of about this size, each sent once the connection has taken
            the one before (at most a quarter of ``max_outbound_bytes``).
        presence_batch_window: seconds over which a channel's joins, leaves and
            updates are merged into one ``presence_diff`` (one frame per member per
            window instead of one per change: a join storm of N costs about N
            frames per window, not N*(N-1)/2). 0: each diff at once, as before.

    History (docs/channels.md):
        history: :class:`~realtime_lab.core.history.HistoryRule` s (pattern, size,
            ttl), first match wins; channels no rule matches keep no history (the
            default: none do). Their messages carry ``offset`` and ``epoch``.

    Operations (docs/deploy.md):
        metrics: serve Prometheus metrics at ``GET /metrics`` (needs the
            ``prometheus`` extra); guarded by ``api_token`` when one is set. Off by
            default.

    Binary protocol and compression (docs/compression.md, docs/protocol.md):
        compression: the permessage-deflate policy (a
            :class:`~realtime_lab.protocol.deflate.CompressionPolicy`; True/False for
            the default policy or none). Offered by default: broadcasts of at least
            256 bytes are compressed once for every connection that negotiated it.
        conformance_echo: serve ``/echo``, an echo endpoint for WebSocket
            conformance runs (Autobahn cases through kosoku). Off by default.

    Adaptive heartbeat (docs/events.md):
        heartbeat_min_interval, heartbeat_max_interval: when both are set the ping
            interval follows load (connections, event-loop lag) between them, and
            clients are told the new interval in a ``heartbeat`` message.
        heartbeat_load_connections: connection count at which the interval reaches
            the maximum.
        heartbeat_lag_threshold: event-loop lag (seconds) at which the interval
            reaches the maximum.
        heartbeat_jitter: fraction of the interval by which each ping is made
            earlier at random, so pings spread out (None: 0.1 when adaptive, else 0).
    """

    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 20.0
    max_message_bytes: int = 64 * 1024
    max_message_fragments: int = 65536
    max_outbound_bytes: int = 1024 * 1024
    max_subscriptions: int = 100
    max_channel_length: int = 128
    channel_pattern: str = DEFAULT_CHANNEL_PATTERN
    client_publish: bool = True
    presence_channels: str | None = "*"
    echo_to_sender: bool = True
    api_token: str | None = None
    close_timeout: float = 2.0
    close_flush_timeout: float = 10.0
    # outbound queue
    write_buffer_bytes: int = 64 * 1024
    droppable_priority: str = "low"
    fanout_slice_seconds: float = 0.005
    fanout_slice_min: int = 1000
    fanout_flush_delay: float = 0.2
    gc_freeze: bool = False
    # security
    allowed_origins: tuple[str, ...] | None = None
    allowed_hosts: tuple[str, ...] | None = None
    max_connections: int = 50_000
    max_connections_per_ip: int = 10_000
    publish_channels: str | tuple[str, ...] = "*"
    handshake_timeout: float = 10.0
    http_body_timeout: float = 10.0
    max_http_header_bytes: int = 64 * 1024
    idle_timeout: float | None = None
    error_limit: tuple[int, float] | None = (20, 10.0)
    token_secret: str | None = None
    token_verifier: Callable[[str], Any] | None = None
    certfile: str | None = None
    keyfile: str | None = None
    http2: bool = False
    http2_websockets: bool = True
    # channel authorization
    channel_secret: str | None = None
    authorizer: Callable[..., Any] | None = None
    channel_rules: tuple[Any, ...] | None = None
    subscribe_channel_info: bool = False
    # presence (docs/presence.md)
    presence_states: tuple[str, ...] = ("online", "away", "busy")
    presence_details: bool = True
    presence_grace: float = 0.0
    presence_idle_timeout: float | None = None
    presence_idle_state: str = "away"
    presence_mode: str = "full"
    presence_full_limit: int = 500
    presence_over_limit: str = "counts"
    presence_count_interval: float = 1.0
    max_presence_members: int = 100_000
    max_presence_meta_bytes: int = 1024
    max_presence_channel_meta_bytes: int = 1024 * 1024
    presence_page_bytes: int = 64 * 1024
    presence_batch_window: float = 0.05
    # history and recovery (docs/channels.md)
    history: tuple[Any, ...] = ()
    # operations (docs/deploy.md)
    metrics: bool = False
    # adaptive heartbeat
    heartbeat_min_interval: float | None = None
    heartbeat_max_interval: float | None = None
    heartbeat_load_connections: int = 10_000
    heartbeat_lag_threshold: float = 0.1
    heartbeat_jitter: float | None = None
    # binary protocol and compression (docs/compression.md)
    compression: CompressionPolicy = field(default_factory=CompressionPolicy)
    conformance_echo: bool = False
    # the Pusher Channels protocol (docs/pusher.md)
    pusher_apps: tuple[object, ...] = ()
    pusher_webhooks: tuple[str, ...] = ()
    pusher_auth: Callable[..., object] | None = None
    pusher_user_auth: Callable[..., object] | None = None
    _channel_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "heartbeat_timeout", "close_timeout",
                     "close_flush_timeout", "http_body_timeout"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value < math.inf):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        for name in ("max_message_bytes", "max_message_fragments", "max_outbound_bytes",
                     "max_subscriptions", "max_channel_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        try:
            compiled = re.compile(self.channel_pattern)
        except re.error as exc:
            raise ValueError(f"channel_pattern is not a valid regular expression: {exc}") from None
        object.__setattr__(self, "_channel_re", compiled)
        _check_issue4_options(self)
        _check_error_limit(self)
        _check_presence_options(self)
        object.__setattr__(self, "pusher_apps", _pusher_apps(self.pusher_apps))
        object.__setattr__(self, "pusher_webhooks", tuple(self.pusher_webhooks))
        try:  # a CompressionPolicy, True or False
            object.__setattr__(self, "compression", as_policy(self.compression))
        except TypeError as exc:
            raise ValueError(f"compression: {exc}") from None

    def with_changes(self, **changes: Any) -> ServerOptions:
        """A copy with some options changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def active_channel_rules(self) -> tuple[Any, ...]:
        """The channel rules in force (see ``channel_rules``)."""
        if self.channel_rules is not None:
            return tuple(self.channel_rules)
        from realtime_lab.core.authz import DEFAULT_RULES

        return DEFAULT_RULES

    def limits(self) -> dict[str, int]:
        """The limits a client is told about in the welcome message."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "max_subscriptions": self.max_subscriptions,
            "max_channel_length": self.max_channel_length,
        }

    @property
    def page_bytes(self) -> int:
        """The size of a presence page: ``presence_page_bytes``, at most a quarter of
        ``max_outbound_bytes`` (so pages in flight never near the slow-consumer bound)."""
        return max(1, min(self.presence_page_bytes, self.max_outbound_bytes // 4))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]


def _check_error_limit(opts: ServerOptions) -> None:
    """``error_limit``: None, or (a positive integer count, a window in seconds > 0)."""
    limit = opts.error_limit
    if limit is None:
        return
    try:
        count, window = limit
    except (TypeError, ValueError):
        raise ValueError("error_limit must be None or (count, window_seconds), "
                         f"got {limit!r}") from None
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"error_limit count must be a positive integer, got {count!r}")
    if (isinstance(window, bool) or not isinstance(window, int | float)
            or not 0 < window < math.inf):
        raise ValueError(f"error_limit window must be a number of seconds > 0, got {window!r}")
    object.__setattr__(opts, "error_limit", (count, float(window)))


def _check_presence_options(opts: ServerOptions) -> None:
    """Validate the presence options (issue 5)."""
    states = tuple(opts.presence_states)
    if not states or not all(isinstance(s, str) and s for s in states):
        raise ValueError("presence_states must be non-empty strings")
    object.__setattr__(opts, "presence_states", states)
    if opts.presence_idle_state not in states:
        raise ValueError(f"presence_idle_state {opts.presence_idle_state!r} is not in "
                         f"presence_states {states}")
    grace = opts.presence_grace
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace < math.inf:
        raise ValueError(f"presence_grace must be a number of seconds >= 0, got {grace!r}")
    window = opts.presence_batch_window
    if (isinstance(window, bool) or not isinstance(window, int | float)
            or not 0 <= window < math.inf):
        raise ValueError(f"presence_batch_window must be a number of seconds >= 0, "
                         f"got {window!r}")
    interval = opts.presence_count_interval
    if (isinstance(interval, bool) or not isinstance(interval, int | float)
            or not 0 <= interval < math.inf):
        raise ValueError(f"presence_count_interval must be a number of seconds >= 0, "
                         f"got {interval!r}")
    from realtime_lab.core.authz import OVER_LIMIT, PRESENCE_MODES
    if opts.presence_mode not in PRESENCE_MODES:
        raise ValueError(f"presence_mode must be one of {PRESENCE_MODES}, "
                         f"got {opts.presence_mode!r}")
    if opts.presence_over_limit not in OVER_LIMIT:
        raise ValueError(f"presence_over_limit must be one of {OVER_LIMIT}, "
                         f"got {opts.presence_over_limit!r}")
    idle = opts.presence_idle_timeout
    if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int | float)
                             or not 0 < idle < math.inf):
        raise ValueError(f"presence_idle_timeout must be seconds > 0, got {idle!r}")
    for name in ("max_presence_members", "presence_full_limit", "max_presence_meta_bytes",
                 "max_presence_channel_meta_bytes", "presence_page_bytes"):
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_issue4_options(opts: ServerOptions) -> None:
    """Validate the queue, security and adaptive-heartbeat options."""
    from realtime_lab.core.outbound import Priority

    for name in ("write_buffer_bytes", "max_connections", "max_connections_per_ip",
                 "heartbeat_load_connections", "max_http_header_bytes"):
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if opts.droppable_priority != "none":
        Priority.parse(opts.droppable_priority)
    seconds, least = opts.fanout_slice_seconds, opts.fanout_slice_min
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not 0 <= seconds < math.inf:
        raise ValueError(f"fanout_slice_seconds must be seconds >= 0, got {seconds!r}")
    if isinstance(least, bool) or not isinstance(least, int) or least < 0:
        raise ValueError(f"fanout_slice_min must be an integer >= 0, got {least!r}")
    delay = opts.fanout_flush_delay
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < math.inf:
        raise ValueError(f"fanout_flush_delay must be seconds >= 0, got {delay!r}")
    for name in ("handshake_timeout", "idle_timeout", "heartbeat_min_interval",
                 "heartbeat_max_interval", "heartbeat_lag_threshold"):
        value = getattr(opts, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 < value < math.inf):
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    lo, hi = opts.heartbeat_min_interval, opts.heartbeat_max_interval
    if (lo is None) != (hi is None) or (lo is not None and hi is not None and lo > hi):
        raise ValueError("set both heartbeat_min_interval and heartbeat_max_interval, min <= max")
    jitter = opts.heartbeat_jitter
    if jitter is not None and not 0 <= jitter < 1:
        raise ValueError(f"heartbeat_jitter must be in [0, 1), got {jitter!r}")
    if (opts.certfile is None) != (opts.keyfile is None):
        raise ValueError("certfile and keyfile go together")
    for name in ("allowed_origins", "allowed_hosts"):
        value = getattr(opts, name)
        if isinstance(value, str):
            object.__setattr__(opts, name, (value,))
        elif value is not None:
            object.__setattr__(opts, name, tuple(value))


def _pusher_apps(apps: object) -> tuple[object, ...]:
    """``pusher_apps`` as a tuple; a string must be ``APP_ID:KEY:SECRET`` (the apps
    themselves are checked by ``realtime_lab.pusher.PusherApps`` when the server starts)."""
    if isinstance(apps, str):
        found: tuple[object, ...] = (apps,)
    elif isinstance(apps, Iterable):
        found = tuple(apps)
    else:
        raise ValueError("pusher_apps is a list of PusherApp or 'APP_ID:KEY:SECRET' strings")
    for app in found:
        if isinstance(app, str) and (app.count(":") != 2 or "" in app.split(":")):
            raise ValueError("a Pusher app is 'APP_ID:KEY:SECRET' (three non-empty parts), "
                             f"got {app.count(':') + 1} parts")
    return found

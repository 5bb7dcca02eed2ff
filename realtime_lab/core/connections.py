"""The connections: admission, the welcome, refusals, closing and the end of a session.

``hub.services.connections``. A transport calls :meth:`Connections.open` (through
``Hub.open``) when a WebSocket handshake completes and :meth:`Connections.closed`
when the socket is gone; the server closes a connection with
:meth:`Connections.close` (a timeout, a fatal error, a slow consumer, the
application) or every one with :meth:`Connections.close_all`.

It owns the open sessions (``sessions``, the same dict as ``hub.sessions``) and
the connection limits (``admission``). What it needs from the rest of the hub
comes in through the constructor: the outbox (the welcome, the last flush), the
heartbeat policy (the welcome's intervals) and the membership's ``leave`` (a
closing session leaves its channels at once, with its reason).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from realtime_lab.core import events as ev
from realtime_lab.core.channels import CLOSED, TIMEOUT
from realtime_lab.core.hooks import ConnectRequest, HookResult, refused
from realtime_lab.core.requests import LIMIT_OF_ERROR
from realtime_lab.core.security import Admission, verify_token
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.errors import ConnectRefused, ProtocolError, Unauthorized
from realtime_lab.protocol import messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.wire import JSON, frame_for

if TYPE_CHECKING:
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.heartbeat import HeartbeatPolicy
    from realtime_lab.core.hooks import Hooks
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.outbox import Outbox
    from realtime_lab.core.ports import Clock, ConnectionPort
    from realtime_lab.core.stats import HubStats
    from realtime_lab.logthrottle import LogThrottle

log = logging.getLogger("realtime_lab.core")

#: Close codes whose presence leaves have the reason ``timeout`` (else ``closed``).
TIMEOUT_CODES = (CloseCode.HEARTBEAT_TIMEOUT, CloseCode.IDLE_TIMEOUT)


class Leave(Protocol):
    """Unsubscribe ``session`` from ``name`` with a leave ``reason`` (core/membership.py)."""

    def __call__(self, session: Session, name: str, *, reason: str | None = None) -> None: ...


@runtime_checkable
class WatchesClosings(Protocol):
    """A middleware told of every closed connection (``realtime_lab.middleware.RateLimit``
    forgets its buckets)."""

    def connection_closed(self, session: Session) -> None: ...


class Connections:
    """Open, welcome, refuse, close and forget connections (``hub.services.connections``)."""

    def __init__(self, options: ServerOptions, *, clock: Clock, stats: HubStats, bus: EventBus,
                 hooks: Hooks, log_throttle: LogThrottle, sessions: dict[str, Session],
                 outbox: Outbox, heartbeat: HeartbeatPolicy, leave: Leave) -> None:
        self.options = options
        self.clock = clock
        self.stats = stats
        self.bus = bus
        self.hooks = hooks
        self.log_throttle = log_throttle
        #: The open sessions by id (``hub.sessions``: the same dict).
        self.sessions = sessions
        self.outbox = outbox
        self.heartbeat = heartbeat
        self.leave = leave
        #: The connection limits (``max_connections``, ``max_connections_per_ip``).
        self.admission = Admission(options.max_connections, options.max_connections_per_ip)
        #: Middleware told of each closed connection (:meth:`set_middleware`).
        self.watchers: tuple[WatchesClosings, ...] = ()

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Tell every middleware that has ``connection_closed`` of each closed connection."""
        self.watchers = tuple(m for m in middleware if isinstance(m, WatchesClosings))

    # ------------------------------------------------------------------ opening

    def open(self, port: ConnectionPort, *, user: str | None = None,
             request: ConnectRequest | None = None) -> Session | PendingOpen:
        """Admit a new connection and send it the welcome message; return its session.

        Checks the connection limits, the connect token and the ``on_connect``
        hook. A refused connection gets an error message and its close code, and
        comes back in state CLOSING. With an async ``on_connect`` the return value
        is a :class:`PendingOpen` (the transport awaits it for the session).
        """
        sid = secrets.token_hex(8)
        now = self.clock()
        remote = port.remote
        session = Session(id=sid, user=user or sid, port=port, connected_at=now, last_seen=now,
                          last_ping_at=now, remote=remote, last_activity=now)
        session.wire = port.wire  # codec + compression (handshake)
        req = request or ConnectRequest(remote=remote, user=user)
        try:
            self.admission.check(remote)
            user = self._authenticate(req, user)
            result = self.hooks.run("on_connect", req) if self.hooks.on_connect else None
        except ProtocolError as err:
            return self._refuse(session, err)
        self.admission.add(sid, remote)
        if inspect.isawaitable(result):
            return PendingOpen(session, self._open_later(session, user, result))
        return self._accept(session, user, result)

    def refused_handshake(self, remote: str, code: int, reason: str, limit: str) -> None:
        """The transport refused a handshake (e.g. HTTP 403 for an origin): count, emit."""
        self.stats.refused += 1
        log.info("refused a handshake from %s: %s %s", remote, code, reason)
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ConnectionRefused(at=now, remote=remote, code=code, reason=reason))
            self.bus.emit(ev.LimitExceeded(at=now, limit=limit, code=code, remote=remote))

    def _authenticate(self, req: ConnectRequest, user: str | None) -> str | None:
        opts = self.options
        if opts.token_secret is None and opts.token_verifier is None:
            return user
        if opts.token_verifier is not None:
            try:
                out = opts.token_verifier(req.token) if req.token else None
            except ProtocolError:
                raise
            except Exception:
                self.log_throttle.log("token_verifier_failed", logging.ERROR,
                                      "token_verifier failed", exc_info=True)
                raise Unauthorized("the connect token could not be verified") from None
            if not out:
                raise Unauthorized("connect token refused")
            claims = out if isinstance(out, dict) else {"user": str(out)}
        else:
            assert opts.token_secret is not None
            claims = verify_token(opts.token_secret, req.token)
        given = claims.get("user")
        return str(given) if given else user

    async def _open_later(self, session: Session, user: str | None,
                          result: Awaitable[HookResult]) -> Session:
        try:
            value = await result
        except ProtocolError as err:
            if session.state is ConnectionState.CLOSED:
                self.admission.remove(session.id)
                return session
            return self._refuse(session, err)
        return self._accept(session, user, value)

    def _accept(self, session: Session, user: str | None, result: HookResult) -> Session:
        if session.state is ConnectionState.CLOSED:  # gone while an async hook ran
            self.admission.remove(session.id)
            return session
        verdict = refused(result)
        if verdict is not None:
            return self._refuse(session, verdict.error(ConnectRefused))
        if isinstance(result, dict):
            given = result.get("user") or user
            user = str(given) if given else None
            metadata = result.get("metadata")
            if metadata:
                session.metadata.update(cast("Mapping[str, object]", metadata))
        if user:
            session.user = user
        session.ping_factor = self.heartbeat.ping_factor()
        self.sessions[session.id] = session
        if session.wire.codec != JSON:
            self.outbox.binary_sessions += 1
        session.state = ConnectionState.OPEN
        self.stats.connections_opened += 1
        self.outbox.send(session, self.welcome(session))
        if self.bus.active:
            self.bus.emit(ev.Connected(at=self.clock(), session=session.id, user=session.user,
                                       remote=session.remote, metadata=dict(session.metadata)))
        return session

    def welcome(self, session: Session) -> dict[str, object]:
        """The ``welcome`` message of ``session`` (docs/protocol.md)."""
        hb = self.heartbeat
        msg = messages.welcome_message(session.id, session.user, hb.interval, hb.timeout,
                                       self.options.limits())
        if hb.adaptive:
            msg["heartbeat"].update(adaptive=True, min=hb.min_interval, max=hb.max_interval)
        return msg

    def _refuse(self, session: Session, err: ProtocolError) -> Session:
        """Refuse a connection that was never opened: error message, then close code."""
        self.stats.refused += 1
        self.admission.remove(session.id)
        code = err.close_code if err.close_code is not None else CloseCode.CONNECT_REFUSED
        session.state = ConnectionState.CLOSING
        session.close_code, session.close_reason = code, err.code
        log.info("refused %s (%s): %s %s", session.id, session.remote, code, err.message)
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ConnectionRefused(at=now, session=session.id, user=session.user,
                                               remote=session.remote, code=code, reason=err.code))
            limit = LIMIT_OF_ERROR.get(err.code)
            if limit is not None:
                self.bus.emit(ev.LimitExceeded(at=now, session=session.id, user=session.user,
                                               limit=limit, code=code, remote=session.remote))
        session.port.write(frame_for(session.wire, messages.error_message(err.code, err.message)))
        session.port.close(code, err.code)
        return session

    # ------------------------------------------------------------------ closing

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close a connection from the server side with ``code``.

        The session leaves its channels and presence now, when the server decides
        (heartbeat or idle timeout, a fatal error, a slow consumer, the application),
        not when the socket finishes closing (up to ``close_timeout`` later for a
        client that does not answer): the others see the leave at once, with its
        reason. :meth:`closed` then has nothing left to leave.
        """
        if self._start_closing(session, code, reason):
            self._detach(session)

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server stopping") -> None:
        """Close every connection with ``code``; then each leaves its channels.

        Every session is CLOSING before the first leave, so no leave diff is queued
        for a connection that is about to close (they would be flushed ahead of its
        close frame)."""
        sessions = [s for s in self.sessions.values() if self._start_closing(s, code, reason)]
        for session in sessions:
            self._detach(session)

    def _start_closing(self, session: Session, code: int, reason: str) -> bool:
        """State CLOSING, what is queued flushed, the close frame sent; False when the
        session was closing already."""
        if session.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return False
        session.state = ConnectionState.CLOSING
        session.close_code = code
        session.close_reason = reason
        self.outbox.flush_session(session, force=True)
        session.port.close(code, reason)
        return True

    def _detach(self, session: Session) -> None:
        """Leave every channel of ``session`` (presence leaves with the reason of its close
        code: ``timeout`` for 4101 and 4105, else ``closed``). Idempotent: a session
        that left everything has nothing to leave again."""
        if not session.subscriptions or self.sessions.get(session.id) is not session:
            return
        reason = TIMEOUT if session.close_code in TIMEOUT_CODES else CLOSED
        for name in list(session.subscriptions):
            self.leave(session, name, reason=reason)

    def closed(self, session: Session, code: int | None = None, reason: str = "") -> None:
        """The transport reports the socket closed: drop subscriptions and presence."""
        if session.state is ConnectionState.CLOSED:
            return
        registered = self.sessions.get(session.id) is session
        session.state = ConnectionState.CLOSED
        if session.close_code is None:
            session.close_code = code
            session.close_reason = reason
        session.pending.clear()
        session.pending_bytes = 0
        self.admission.remove(session.id)
        if not registered:  # refused, or gone before an async on_connect finished
            return
        self._detach(session)  # usually done already, when the server decided to close
        self.sessions.pop(session.id, None)
        if session.wire.codec != JSON:
            self.outbox.binary_sessions -= 1
        self.stats.connections_closed += 1
        for mw in self.watchers:
            try:
                mw.connection_closed(session)
            except Exception:
                log.exception("middleware %r failed in connection_closed", mw)
        if self.hooks.on_disconnect is not None:
            self._fire_and_forget("on_disconnect", session, session.close_code,
                                  session.close_reason)
        if self.bus.active:
            now = self.clock()
            if session.close_code == CloseCode.MESSAGE_TOO_BIG:  # closed by the transport
                self.bus.emit(ev.LimitExceeded(
                    at=now, session=session.id, user=session.user, limit="max_message_bytes",
                    code=CloseCode.MESSAGE_TOO_BIG, remote=session.remote))
            self.bus.emit(ev.Disconnected(at=now, session=session.id, user=session.user,
                                          code=session.close_code, reason=session.close_reason))

    def _fire_and_forget(self, name: str, *args: object) -> None:
        try:
            result = self.hooks.run(name, *args)
        except ProtocolError:
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class PendingOpen:
    """What :meth:`Connections.open` returns while an async ``on_connect`` runs: await it."""

    __slots__ = ("_awaitable", "session")

    def __init__(self, session: Session, awaitable: Awaitable[Session]) -> None:
        self.session = session
        self._awaitable = awaitable

    def __await__(self) -> Generator[object, None, Session]:
        return self._awaitable.__await__()


__all__ = ["TIMEOUT_CODES", "Connections", "Leave", "PendingOpen", "WatchesClosings"]

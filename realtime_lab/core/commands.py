"""The inbound commands: a client's messages from the transport to the hub's actions.

``hub.services.commands``. :meth:`Commands.receive_text` decodes a message, runs it
through the inbound middleware and the ``on_message`` hook, validates it and hands
it to its handler (publish, subscribe, unsubscribe, presence, receipts, ping). Each
message is a :class:`~realtime_lab.core.requests.Request`: handlers answer through
``request.reply`` and ``request.reject``. A ``ProtocolError`` on the way becomes an
``error`` reply (:meth:`Commands.reject`), closing the connection when the error is
fatal or the client sends too many bad messages.

What the commands need from the rest of the hub comes in through the constructor:
the outbox, the channel registry, the publish path, history, and the membership
(:class:`MembershipPort`: subscribe, leave, presence) and the connections' ``close``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from realtime_lab.core import events as ev
from realtime_lab.core.error_limit import INVALID_INPUT_CODES, count_invalid
from realtime_lab.core.hooks import HookResult, Hooks, MaybeAwaitable, Refuse, refused
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import HubView, Inbound, compose
from realtime_lab.core.requests import LIMIT_OF_ERROR, Request, request_for
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.errors import (
    BinaryNotSupported,
    Forbidden,
    InternalError,
    MessageRefused,
    NotSubscribed,
    ProtocolError,
    UnsubscribeRefused,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.values import check_message
from realtime_lab.protocol.wire import MSGPACK

if TYPE_CHECKING:
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.history import HistoryService
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.outbox import Outbox
    from realtime_lab.core.ports import Clock
    from realtime_lab.core.publish import PublishPath
    from realtime_lab.core.registry import ChannelRegistry
    from realtime_lab.core.stats import HubStats
    from realtime_lab.logthrottle import LogThrottle

log = logging.getLogger("realtime_lab.core")

#: What a middleware that does not pass a request on means (``message_refused``).
DROPPED_BY_MIDDLEWARE = Refuse(reason="dropped by middleware")

#: A decoder of one message's text or bytes (JSON, or MessagePack on the msgpack protocol).
Decode = Callable[[Any], object]
Close = Callable[[Session, int, str], None]


class MembershipPort(Protocol):
    """What the commands need from the channels' membership and presence
    (core/membership.py, core/presence.py)."""

    def join(self, request: Request, name: str, auth: str | None) -> MaybeAwaitable[None]:
        """Subscribe the request's session to ``name``: hooks, authorization, then the
        ``subscribed`` reply through ``request``; a refusal raises its error."""

    def leave(self, session: Session, name: str, *, reason: str | None = None) -> None:
        """Unsubscribe ``session`` from ``name``; ``reason``: the presence leave's
        (``left`` when None)."""

    def presence(self, request: Request, msg: messages.SetPresence) -> MaybeAwaitable[None]:
        """A client's ``presence`` message: the change, then the reply through ``request``."""

    def wake(self, session: Session) -> None:
        """An idled presence member of ``session``'s user is active again."""

    @property
    def idle_users(self) -> dict[str, set[str]]:
        """Users idled by the presence idle timeout (empty: nobody to wake)."""


class Commands:
    """Inbound messages: decode, middleware, hook, validation, handlers, errors."""

    def __init__(self, options: ServerOptions, *, clock: Clock, stats: HubStats, bus: EventBus,
                 hooks: Hooks, log_throttle: LogThrottle, outbox: Outbox,
                 registry: ChannelRegistry, publisher: PublishPath, history: HistoryService,
                 membership: MembershipPort, close: Close, hub: HubView) -> None:
        self.options = options
        self.clock = clock
        self.stats = stats
        self.bus = bus
        self.hooks = hooks
        self.log_throttle = log_throttle
        self.outbox = outbox
        self.registry = registry
        self.publisher = publisher
        self.history = history
        self.membership = membership
        #: Users with idled presence members (the membership's dict, read per message).
        self.idle_users = membership.idle_users
        self.close = close
        self.hub = hub  # what inbound middleware sees as ``ctx.hub``
        #: The inbound middleware chain (None: no middleware takes part).
        self.chain: Callable[[Inbound], MaybeAwaitable[None]] | None = None

    def set_middleware(self, middleware: Sequence[object]) -> None:
        """Wrap the handlers in every middleware that has an ``inbound`` method."""
        self.chain = compose(middleware, self._endpoint, "inbound")

    # ------------------------------------------------------------------ answers

    def send(self, session: Session, message: dict[str, object]) -> bool:
        """Queue a reply for ``session`` (control priority; ``Request.reply``)."""
        return self.outbox.send(session, message)

    def reject(self, session: Session, err: ProtocolError) -> None:
        """Answer a bad request with an error message, and close when the error is fatal.

        The reply carries ``err.request_id`` (a :class:`Request` gives the error its id).
        """
        session.stats.errors += 1
        self.stats.errors_sent += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %s: %s %s", session.id, err.code, err.message)
        self.outbox.send(session, messages.error_message(err.code, err.message, err.request_id))
        if self.bus.active:
            now = self.clock()
            self.bus.emit(ev.ErrorEvent(at=now, session=session.id, user=session.user,
                                        code=err.code, message=err.message))
            limit = LIMIT_OF_ERROR.get(err.code)
            if limit is not None:
                self.bus.emit(ev.LimitExceeded(
                    at=now, session=session.id, user=session.user, limit=limit,
                    code=err.close_code or err.code, remote=session.remote))
        if err.close_code is not None:
            self.close(session, err.close_code, err.code)
        elif err.code in INVALID_INPUT_CODES and self.options.error_limit is not None:
            too_many = count_invalid(session, self.clock(), self.options.error_limit)
            if too_many is not None:
                self.stats.too_many_errors += 1
                self.reject(session, too_many)

    # ------------------------------------------------------------------ the way in

    def receive_text(self, session: Session, text: str | bytes, *,
                     decode: Decode = codec.decode) -> Awaitable[None] | None:
        """Handle one inbound text message (or binary one, with the msgpack ``decode``).

        Returns None when done, or an awaitable when an async middleware or hook
        is still working; the transport awaits it before the next message of this
        connection, so each connection's messages are handled in order.
        """
        if session.state is not ConnectionState.OPEN:
            return None
        now = self.clock()
        session.last_seen = now
        session.last_activity = now
        idle = self.idle_users
        if idle and session.user in idle:
            self.membership.wake(session)  # an idled presence member is back
        session.stats.messages_in += 1
        session.stats.bytes_in += len(text)
        self.stats.messages_in += 1
        request: Request | None = None
        try:
            obj = decode(text)
            request = request_for(session, obj, self)
            chain = self.chain
            ctx: Inbound | None = None
            if chain is None:
                request.reached = True
                result = self._handle(request, obj)
            else:
                ctx = Inbound(session, obj, len(text), now, self.hub, request=request)
                result = chain(ctx)
            if inspect.isawaitable(result):
                return self._finish(session, request, result, ctx)
            if not request.reached:
                self._not_passed_on(request, ctx)
        except ProtocolError as err:
            self._reject_for(session, request, err)
        except Exception as exc:
            self._failed_on(session, request, exc)
        return None

    def receive_binary(self, session: Session, data: bytes) -> Awaitable[None] | None:
        """A MessagePack message on the msgpack protocol; on JSON, an error."""
        if session.wire.codec == MSGPACK:
            from realtime_lab.protocol import msgpack_codec

            return self.receive_text(session, data, decode=msgpack_codec.decode)
        if session.state is not ConnectionState.OPEN:
            return None
        session.last_seen = self.clock()
        self.reject(session, BinaryNotSupported(
            "binary frames are not accepted on the JSON protocol; send JSON text frames"))
        return None

    async def _finish(self, session: Session, request: Request, result: Awaitable[None],
                      ctx: Inbound | None) -> None:
        try:
            await result
            if not request.reached:
                self._not_passed_on(request, ctx)
        except ProtocolError as err:
            self._reject_for(session, request, err)
        except Exception as exc:
            self._failed_on(session, request, exc)

    def _failed_on(self, session: Session, request: Request | None, exc: Exception) -> None:
        """The server failed on a message (a bug: input is refused before it can fail):
        ``internal_error``, and the traceback logged once per kind and minute."""
        self.stats.internal_errors += 1
        self.log_throttle.log(f"inbound_failed:{type(exc).__name__}", logging.ERROR,
                              "failed to handle a message from %s", session.id,
                              exc_info=exc)
        self._reject_for(session, request, InternalError("the server failed on this message"))

    def _reject_for(self, session: Session, request: Request | None,
                    err: ProtocolError) -> None:
        if request is not None:
            request.reject(err)
        elif session.state is ConnectionState.OPEN:  # not decoded: the error has the id
            self.reject(session, err)

    def _not_passed_on(self, request: Request, ctx: Inbound | None) -> None:
        """The inbound middleware returned without passing the message on: dropped."""
        if not request.answered and request.is_open:
            self._dropped(request, "middleware", ctx.channel if ctx is not None else None,
                          DROPPED_BY_MIDDLEWARE)

    def _dropped(self, request: Request, reason: str, channel: str | None,
                 refusal: Refuse) -> None:
        """A message the ``on_message`` hook or a middleware dropped: ``message.dropped``
        (``reason``), and ``message_refused`` when the request has an ``id``."""
        self.outbox.drop(request.session, Priority.NORMAL, 0, reason, channel)
        if request.id is not None:
            request.reject(refusal.error(MessageRefused))

    def _endpoint(self, ctx: Inbound) -> MaybeAwaitable[None]:
        request = ctx.request
        if request is None:  # a middleware passed on a context of its own
            request = request_for(ctx.session, ctx.message, self)
        request.reached = True
        return self._handle(request, ctx.message)

    def _handle(self, request: Request, obj: object) -> MaybeAwaitable[None]:
        msg = messages.parse_client_message(obj)
        if self.hooks.on_message is None:
            return self._dispatch(request, msg)
        result = self.hooks.run("on_message", request.session, obj)
        return request.then(result, lambda r: self._after_message_hook(request, msg, r))

    def _after_message_hook(self, request: Request, msg: messages.ClientMessage,
                            result: HookResult) -> MaybeAwaitable[None]:
        verdict = refused(result)
        if verdict is not None:
            self._dropped(request, "hook", getattr(msg, "channel", None), verdict)
            return None
        if isinstance(result, dict):
            check_message(result)  # the hook's message must be in the data model too
            msg = messages.parse_client_message(result)
            request.id, request.kind = msg.id, cast("str", result["type"])  # its id wins
        return self._dispatch(request, msg)

    # ------------------------------------------------------------------ the handlers

    def _dispatch(self, request: Request, msg: messages.ClientMessage) -> MaybeAwaitable[None]:
        session = request.session
        if isinstance(msg, messages.Publish):  # the hot path: no further call
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server")
            self.registry.check_publish(session, msg.channel)
            echo = self.options.echo_to_sender if session.echo is None else session.echo
            prio = Priority.NORMAL if msg.priority is None else Priority.parse(msg.priority)
            recipients = self.publisher.publish(
                msg.channel, msg.data, session.user, exclude=None if echo else session,
                priority=prio, event=msg.event)
            if msg.id is not None:
                request.reply(messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            result = self.membership.join(request, msg.channel, msg.auth)
            if msg.since is None:
                return result
            since = msg.since  # recovery runs in the same step as the join: no gap
            return request.then(result, lambda _: self._recover_if_joined(session, msg.channel,
                                                                          since))
        elif isinstance(msg, messages.Unsubscribe):
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"not subscribed to {msg.channel!r}")
            if self.hooks.on_unsubscribe is None:
                self._unsubscribe(request, msg.channel, None)
                return None
            verdict = self.hooks.run("on_unsubscribe", session, msg.channel)
            return request.then(verdict, lambda r: self._unsubscribe(request, msg.channel, r))
        elif isinstance(msg, messages.SetPresence):  # on_presence, then the reply
            self.registry.validate(msg.channel)
            return self.membership.presence(request, msg)
        elif isinstance(msg, messages.Receipts):  # no reply; kept only while recording
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"receipts for {msg.channel!r}, which this connection is "
                                    "not subscribed to")
            probe = self.publisher.probe
            if probe is not None:
                probe.latency_ms(msg.channel, msg.latency_ms)
        else:  # Ping
            request.reply(messages.pong_message(msg.id))
        return None

    def _recover_if_joined(self, session: Session, name: str,
                           since: dict[str, object]) -> None:
        if name in session.subscriptions:
            self.history.recover(session, name, since)

    def _unsubscribe(self, request: Request, name: str, verdict: HookResult) -> None:
        session = request.session
        if name not in session.subscriptions:
            return
        refusal = refused(verdict)
        if refusal is not None:
            raise refusal.error(UnsubscribeRefused)
        self.membership.leave(session, name)
        request.reply(messages.unsubscribed_message(name, request.id))


__all__ = ["DROPPED_BY_MIDDLEWARE", "Commands", "MembershipPort"]

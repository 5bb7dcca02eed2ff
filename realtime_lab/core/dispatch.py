"""The inbound path: a client's messages from the transport to the hub's actions.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin); it shares the hub's state.
:meth:`Dispatch.receive_text` decodes a message, runs it through the inbound
middleware and the ``on_message`` hook, validates it and dispatches it
(publish, subscribe, unsubscribe, presence, ping); a ``ProtocolError`` on the
way becomes an ``error`` reply (:meth:`Dispatch.reject`), closing the
connection when the error is fatal or the client sends too many bad messages.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from realtime_lab.core import events as ev
from realtime_lab.core.error_limit import INVALID_INPUT_CODES, count_invalid
from realtime_lab.core.hooks import HookResult, MaybeAwaitable, Refuse, refused
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import Inbound
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
    from realtime_lab.core.hub import Hub

log = logging.getLogger("realtime_lab.core")

#: What a middleware that does not pass a request on means (``message_refused``).
DROPPED_BY_MIDDLEWARE = Refuse(reason="dropped by middleware")


class Dispatch(HubBase):
    """Inbound messages: decode, middleware, hook, validation, dispatch, errors (part of Hub)."""

    def receive_text(self, session: Session, text: str | bytes, *,
                     decode: Callable[[Any], Any] = codec.decode) -> Awaitable[None] | None:
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
        if self._idle_users and session.user in self._idle_users:
            self._wake(session)  # an idled presence member is back
        session.stats.messages_in += 1
        session.stats.bytes_in += len(text)
        self.stats.messages_in += 1
        request: Request | None = None
        try:
            obj = decode(text)
            request = request_for(session, obj, self)
            inbound = self._inbound
            ctx: Inbound | None = None
            if inbound is None:
                request.reached = True
                result = self._handle(request, obj)
            else:
                ctx = Inbound(session, obj, len(text), now, cast("Hub", self), request=request)
                result = inbound(ctx)
            if inspect.isawaitable(result):
                return self._finish(session, request, result, ctx)
            if not request.reached:
                self._not_passed_on(request, ctx)
        except ProtocolError as err:
            self._reject_for(session, request, err)
        except Exception as exc:
            self._failed_on(session, request, exc)
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
        self._drop(request.session, Priority.NORMAL, 0, reason, channel)
        if request.id is not None:
            request.reject(refusal.error(MessageRefused))

    def _inbound_endpoint(self, ctx: Inbound) -> MaybeAwaitable[None]:
        request = ctx.request
        if request is None:  # a middleware passed on a context of its own
            request = request_for(ctx.session, ctx.message, self)
        request.reached = True
        return self._handle(request, ctx.message)

    def _handle(self, request: Request, obj: Any) -> MaybeAwaitable[None]:
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
            request.id, request.kind = msg.id, result["type"]  # its id replaces the first
        return self._dispatch(request, msg)

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

    def reject(self, session: Session, err: ProtocolError) -> None:
        """Answer a bad request with an error message, and close when the error is fatal.

        The reply carries ``err.request_id`` (a :class:`Request` gives the error its id).
        """
        session.stats.errors += 1
        self.stats.errors_sent += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %s: %s %s", session.id, err.code, err.message)
        self.send(session, messages.error_message(err.code, err.message, err.request_id))
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

    def _dispatch(self, request: Request, msg: messages.ClientMessage) -> MaybeAwaitable[None]:
        session = request.session
        if isinstance(msg, messages.Publish):
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server")
            self.services.registry.check_publish(session, msg.channel)
            echo = self.options.echo_to_sender if session.echo is None else session.echo
            prio = Priority.NORMAL if msg.priority is None else Priority.parse(msg.priority)
            recipients = self.services.publisher.publish(
                msg.channel, msg.data, session.user, exclude=None if echo else session,
                priority=prio, event=msg.event)
            if msg.id is not None:
                request.reply(messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            result = self._subscribe(request, msg.channel, msg.auth)
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
            self.services.registry.validate(msg.channel)
            return self.presence_message(request, msg)
        elif isinstance(msg, messages.Receipts):  # no reply; kept only while recording
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"receipts for {msg.channel!r}, which this connection is "
                                    "not subscribed to")
            probe = self.services.publisher.probe
            if probe is not None:
                probe.latency_ms(msg.channel, msg.latency_ms)
        else:  # Ping
            request.reply(messages.pong_message(msg.id))
        return None

    def _recover_if_joined(self, session: Session, name: str, since: dict[str, Any]) -> None:
        if name in session.subscriptions:
            self.recover(session, name, since)

    def _unsubscribe(self, request: Request, name: str, verdict: HookResult) -> None:
        session = request.session
        if name not in session.subscriptions:
            return
        refusal = refused(verdict)
        if refusal is not None:
            raise refusal.error(UnsubscribeRefused)
        self._leave(session, name)
        request.reply(messages.unsubscribed_message(name, request.id))


__all__ = ["DROPPED_BY_MIDDLEWARE", "LIMIT_OF_ERROR", "Dispatch"]

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
from realtime_lab.core.hooks import refused, then
from realtime_lab.core.hub_base import HubBase
from realtime_lab.core.outbound import Priority
from realtime_lab.core.pipeline import Inbound
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

#: error code -> the option (limit) it enforces, for ``limit.exceeded`` events.
LIMIT_OF_ERROR = {
    "too_many_subscriptions": "max_subscriptions",
    "bad_channel": "channel_name",
    "forbidden": "publish_channels",
    "rate_limited": "rate_limit",
    "rate_limit_abuse": "rate_limit",
    "server_full": "max_connections",
    "too_many_connections_from_ip": "max_connections_per_ip",
    "idle_timeout": "idle_timeout",
    "unauthorized": "connect_token",
    "token_expired": "connect_token",
    "presence_full": "max_presence_members",
    "presence_meta_too_large": "max_presence_meta_bytes",
    "presence_meta_full": "max_presence_channel_meta_bytes",
    "too_many_errors": "error_limit",
}


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
        obj: Any = None
        try:
            obj = decode(text)
            inbound = self._inbound
            if inbound is None:
                result = self._handle(session, obj)
            else:
                result = inbound(Inbound(session, obj, len(text), now, cast("Hub", self)))
            if inspect.isawaitable(result):
                return self._finish(session, obj, result)
        except ProtocolError as err:
            self._reject_for(session, obj, err)
        except Exception as exc:
            self._failed_on(session, obj, exc)
        return None

    async def _finish(self, session: Session, obj: Any, result: Awaitable[Any]) -> None:
        try:
            await result
        except ProtocolError as err:
            self._reject_for(session, obj, err)
        except Exception as exc:
            self._failed_on(session, obj, exc)

    def _failed_on(self, session: Session, obj: Any, exc: Exception) -> None:
        """The server failed on a message (a bug: input is refused before it can fail):
        ``internal_error``, and the traceback logged once per kind and minute."""
        self.stats.internal_errors += 1
        self.log_throttle.log(f"inbound_failed:{type(exc).__name__}", logging.ERROR,
                              "failed to handle a message from %s", session.id,
                              exc_info=exc)
        self._reject_for(session, obj, InternalError("the server failed on this message"))

    def _reject_for(self, session: Session, obj: Any, err: ProtocolError) -> None:
        if session.state is not ConnectionState.OPEN:
            return
        if err.request_id is None and isinstance(obj, dict):
            rid = obj.get("id")
            if isinstance(rid, int | str) and not isinstance(rid, bool):
                err.request_id = rid
        self.reject(session, err)

    def _inbound_endpoint(self, ctx: Inbound) -> Any:
        return self._handle(ctx.session, ctx.message)

    def _handle(self, session: Session, obj: Any) -> Any:
        msg = messages.parse_client_message(obj)
        if self.hooks.on_message is None:
            return self._dispatch(session, msg)
        result = self.hooks.run("on_message", session, obj)
        return then(result, lambda r: self._after_message_hook(session, msg, r))

    def _after_message_hook(self, session: Session, msg: messages.ClientMessage,
                            result: Any) -> Any:
        if session.state is not ConnectionState.OPEN:
            return None
        verdict = refused(result)
        if verdict is not None:
            self._drop(session, Priority.NORMAL, 0, "hook", getattr(msg, "channel", None))
            if msg.id is not None:
                err = MessageRefused(verdict.reason, request_id=msg.id)
                if isinstance(verdict.code, str):
                    err.code = verdict.code  # type: ignore[misc]
                raise err
            return None
        if isinstance(result, dict):
            check_message(result)  # the hook's message must be in the data model too
            msg = messages.parse_client_message(result)
        return self._dispatch(session, msg)

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
        """Answer a bad request with an error message, and close when the error is fatal."""
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

    def _dispatch(self, session: Session, msg: messages.ClientMessage) -> Any:
        if isinstance(msg, messages.Publish):
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server", request_id=msg.id)
            self.services.registry.check_publish(session, msg.channel, msg.id)
            sender = None if self.options.echo_to_sender else session
            prio = Priority.NORMAL if msg.priority is None else Priority.parse(msg.priority)
            recipients = self._broadcast(msg.channel, msg.data, session.user, exclude=sender,
                                         priority=prio)
            if msg.id is not None:
                self.send(session, messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            result = self.subscribe(session, msg.channel, msg.id, msg.auth)
            if msg.since is None:
                return result
            since = msg.since  # recovery runs in the same step as the join: no gap
            return then(result, lambda _: self._recover_if_joined(session, msg.channel, since))
        elif isinstance(msg, messages.Unsubscribe):
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"not subscribed to {msg.channel!r}", request_id=msg.id)
            if self.hooks.on_unsubscribe is None:
                return self._unsubscribe(session, msg.channel, msg.id, None)
            result = self.hooks.run("on_unsubscribe", session, msg.channel)
            return then(result, lambda r: self._unsubscribe(session, msg.channel, msg.id, r))
        elif isinstance(msg, messages.SetPresence):  # on_presence, then the reply
            self.services.registry.validate(msg.channel, msg.id)
            return self.presence_message(session, msg)
        elif isinstance(msg, messages.Receipts):  # no reply; kept only while recording
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"receipts for {msg.channel!r}, which this connection is "
                                    "not subscribed to", request_id=msg.id)
            if self.recorder is not None:
                self.recorder.latency_ms(msg.channel, msg.latency_ms)
        else:  # Ping
            self.send(session, messages.pong_message(msg.id))
        return None

    def _recover_if_joined(self, session: Session, name: str, since: dict[str, Any]) -> None:
        if session.state is ConnectionState.OPEN and name in session.subscriptions:
            self.recover(session, name, since)

    def _unsubscribe(self, session: Session, name: str, rid: messages.RequestId,
                     verdict: Any) -> None:
        if session.state is not ConnectionState.OPEN or name not in session.subscriptions:
            return
        refusal = refused(verdict)
        if refusal is not None:
            err = UnsubscribeRefused(refusal.reason, request_id=rid)
            if isinstance(refusal.code, str):
                err.code = refusal.code  # type: ignore[misc]
            raise err
        self._leave(session, name)
        self.send(session, messages.unsubscribed_message(name, rid))


__all__ = ["LIMIT_OF_ERROR", "Dispatch"]

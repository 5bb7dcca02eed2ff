"""Requests: one client message being handled, and its one answer.

A :class:`Request` is made for each message a client sends (core/dispatch.py) and
for the server calls that act on a client's behalf (``Hub.subscribe``,
``Hub.request_presence``). It carries the session and the message's ``id``; the
handlers answer through it:

* :meth:`Request.reply` sends the reply (built with the request's ``id``);
* :meth:`Request.reject` sends the ``error`` with the request's ``id`` (the hub
  counts it, emits ``error`` and ``limit.exceeded``, applies the error limit and
  closes on a fatal error: ``Hub.reject``);
* :meth:`Request.then` runs the next step of a request once a hook, the
  authorizer or another step is done, and drops it when the connection is no
  longer open by then.

A request is answered at most once, and never on a connection that is no longer
open: those checks live here, not in each handler. Errors are built whole where
they are raised; the request gives them its ``id``
(:meth:`~realtime_lab.errors.ProtocolError.for_request`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, overload

from realtime_lab.core.hooks import MaybeAwaitable
from realtime_lab.core.session import ConnectionState

if TYPE_CHECKING:
    from realtime_lab.core.session import Session
    from realtime_lab.errors import ProtocolError
    from realtime_lab.protocol.messages import RequestId

T = TypeVar("T")
R = TypeVar("R")

_OPEN = ConnectionState.OPEN

#: error code -> the option (limit) it enforces, for ``limit.exceeded`` events.
LIMIT_OF_ERROR: dict[str, str] = {
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


class Answers(Protocol):
    """Where a request's answers go (the hub: ``Hub.send`` and ``Hub.reject``)."""

    def send(self, session: Session, message: dict[str, object]) -> bool: ...

    def reject(self, session: Session, err: ProtocolError) -> None: ...


def request_for(session: Session, message: object, answers: Answers) -> Request:
    """The request a decoded client message is: its ``id`` (an integer or a string, else
    None: an ``id`` of another type is refused with ``bad_field`` when the message is
    parsed) and its ``type``. One look at the message, on every message's way in."""
    if type(message) is dict:  # what the JSON and MessagePack decoders give for an object
        rid, kind = message.get("id"), message.get("type")
        if type(rid) is not int and type(rid) is not str:  # bool is not int here
            rid = None
        return Request(session, rid, kind if type(kind) is str else "", answers)
    return Request(session, None, "", answers)


@dataclass(eq=False, slots=True)
class Request:
    """One request of ``session``: ``id`` (None when the client wants no reply) and
    ``kind`` (the message ``type``: ``publish``, ``subscribe``...)."""

    session: Session
    id: RequestId
    kind: str
    answers: Answers
    #: A reply or an error went out (or the connection was gone): nothing more will.
    answered: bool = False
    #: The inbound middleware passed the message on to the hub (core/dispatch.py).
    reached: bool = False

    @property
    def is_open(self) -> bool:
        """The connection is still open (a hook may have taken time, or closed it)."""
        return self.session.state is _OPEN

    def reply(self, message: dict[str, object]) -> None:
        """Send ``message`` (the reply, built with this request's ``id``): once, and only
        while the connection is open."""
        if self.answered or self.session.state is not _OPEN:
            return
        self.answered = True
        self.answers.send(self.session, message)

    def reject(self, err: ProtocolError) -> None:
        """Answer with ``err`` as an ``error`` carrying this request's ``id``: once, and
        only while the connection is open."""
        if self.answered or self.session.state is not _OPEN:
            return
        self.answered = True
        self.answers.reject(self.session, err.for_request(self.id))

    @overload
    def then(self, result: Awaitable[T],
             step: Callable[[T], MaybeAwaitable[R]]) -> Awaitable[R | None]: ...

    @overload
    def then(self, result: T,
             step: Callable[[T], MaybeAwaitable[R]]) -> MaybeAwaitable[R | None]: ...

    def then(self, result: MaybeAwaitable[T],
             step: Callable[[T], MaybeAwaitable[R]]) -> MaybeAwaitable[R | None]:
        """``step(result)``, after awaiting ``result`` when it is awaitable (and awaiting
        what ``step`` returns); None without calling ``step`` when the connection is
        no longer open by then."""
        if inspect.isawaitable(result):
            return self._later(result, step)
        if self.session.state is not _OPEN:
            return None
        return step(result)

    async def _later(self, result: Awaitable[T],
                     step: Callable[[T], MaybeAwaitable[R]]) -> R | None:
        value = await result
        if self.session.state is not _OPEN:
            return None
        out = step(value)
        if inspect.isawaitable(out):
            return await out
        return out


__all__ = ["LIMIT_OF_ERROR", "Answers", "Request", "request_for"]

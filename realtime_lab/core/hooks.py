"""Hooks: user callbacks at the key points of a connection's life.

Every hook may be a plain function or a coroutine function. What a hook returns:

=================  ==========================================================
``on_connect``     ``None``/``True`` accept; ``False`` or ``Refuse(code, reason)``
                   reject (close code, default 4005); a dict
                   ``{"user": ..., "metadata": {...}}`` accepts and attaches them.
``on_message``     ``None``/``True`` keep; a dict replaces the message;
                   ``False`` or ``Refuse`` drops it (error ``message_refused``).
``on_subscribe``   ``None``/``True`` allow; ``False``/``Refuse`` refuse (error
                   ``subscribe_refused``); a dict allows and becomes channel metadata.
``on_unsubscribe`` as on_subscribe (error ``unsubscribe_refused``).
``on_presence``    called ``(session, channel, change)`` when a connection joins a
                   presence channel (``change = {"event": "join", "state",
                   "meta"}``) and when a client changes its state/metadata (a
                   ``presence`` message or ``Hub.update_presence``: ``{"event":
                   "update", "state", "meta", "changed"}``, the member as it
                   would be after the change). ``None``/``True`` allow; a dict
                   replaces the member's metadata; ``False``/``Refuse`` veto. A
                   vetoed join subscribes without presence (the member is not
                   announced); a vetoed update is an error ``presence_refused``
                   (or the ``Refuse`` code), nothing changes, the connection
                   stays open. Server calls (``Hub.set_member``,
                   ``Hub.set_presence``, the idle timeout) do not run it.
``on_disconnect``  ignored.
=================  ==========================================================

A hook that raises is logged and treated as a refusal with error code
``hook_failed``; one that takes longer than ``timeout`` seconds, ``hook_timeout``
(an ``on_presence`` that fails at a join vetoes presence silently: the
subscribe succeeds without it).
A hook may also raise a :class:`~realtime_lab.errors.ProtocolError` to refuse with
that error's own code. Async hooks keep each connection's messages in order: the
transport awaits the hub before it reads the next message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TypeAlias, TypeVar, Union

from realtime_lab.errors import HookFailed, HookTimeout, ProtocolError
from realtime_lab.logthrottle import LogThrottle

if TYPE_CHECKING:
    from realtime_lab.core.session import Session

log = logging.getLogger("realtime_lab.core")

HOOK_NAMES = ("on_connect", "on_message", "on_subscribe", "on_unsubscribe", "on_presence",
              "on_disconnect")

T = TypeVar("T")
E = TypeVar("E", bound=ProtocolError)

MaybeAwaitable: TypeAlias = Union[T, Awaitable[T]]  # noqa: UP007 (a generic alias needs Union)
"""A value, or an awaitable of it: what a hook, a middleware or a step of a request
returns (``MaybeAwaitable[None]``: None, or an awaitable the transport awaits)."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Returned by a hook to refuse, with a code (int close code for on_connect,
    string error code otherwise) and a reason for the client."""

    code: int | str | None = None
    reason: str = "refused"

    def error(self, kind: type[E]) -> E:
        """The error this refusal means: ``kind`` with the refusal's reason and code.

        An error that closes the connection (``kind.close_code`` set: ``ConnectRefused``)
        takes an int code as its close code; any other takes a string code as its
        error code. A code of the other type is ignored.
        """
        code = self.code
        if kind.close_code is not None:
            close = code if isinstance(code, int) and not isinstance(code, bool) else None
            return kind(self.reason, close_code=close)
        return kind(self.reason, code=code if isinstance(code, str) else None)


#: What a hook may return (the table above): allow (None, True), refuse (False,
#: :class:`Refuse`), or allow with data (a dict). A value of another type allows.
HookResult: TypeAlias = "bool | Refuse | Mapping[str, object] | None"


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What ``on_connect`` sees of a new connection."""

    remote: str
    user: str | None = None
    origin: str | None = None
    path: str = "/ws"
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None


#: ``on_connect(request)``: a dict may hold ``user`` and ``metadata``.
OnConnect: TypeAlias = Callable[[ConnectRequest], MaybeAwaitable[HookResult]]
#: ``on_message(session, message)``: a dict replaces the message.
OnMessage: TypeAlias = Callable[["Session", dict[str, object]], MaybeAwaitable[HookResult]]
#: ``on_subscribe(session, channel)`` and ``on_unsubscribe(session, channel)``.
OnChannel: TypeAlias = Callable[["Session", str], MaybeAwaitable[HookResult]]
#: ``on_presence(session, channel, change)``: a dict replaces the member's metadata.
OnPresence: TypeAlias = Callable[["Session", str, dict[str, object]],
                                 MaybeAwaitable[HookResult]]
#: ``on_disconnect(session, close_code, close_reason)``: what it returns is ignored.
OnDisconnect: TypeAlias = Callable[["Session", "int | None", str], MaybeAwaitable[object]]
#: Any of the hooks above.
Hook: TypeAlias = OnConnect | OnMessage | OnChannel | OnPresence | OnDisconnect


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """The server's hooks (each optional) and the time an async one may take."""

    on_connect: OnConnect | None = None
    on_message: OnMessage | None = None
    on_subscribe: OnChannel | None = None
    on_unsubscribe: OnChannel | None = None
    on_presence: OnPresence | None = None
    on_disconnect: OnDisconnect | None = None
    timeout: float = 5.0
    #: A hook that fails on some input fails on every such message: one record a minute.
    _log: LogThrottle = field(default_factory=lambda: LogThrottle(log), init=False,
                              repr=False, compare=False)

    def run(self, name: str, *args: object) -> MaybeAwaitable[HookResult]:
        """Call hook ``name``; return its result or an awaitable of it.

        Raises :class:`HookFailed` if the hook raised; the awaitable raises
        :class:`HookTimeout` after :attr:`timeout`.
        """
        fn = getattr(self, name)  # one of the fields above: called with its own arguments
        if fn is None:
            return None
        try:
            result = fn(*args)
        except ProtocolError:
            raise
        except Exception as exc:
            self._failed(name, exc)
        if inspect.isawaitable(result):
            return self._guard(name, result)
        return _as_result(result)

    async def _guard(self, name: str, awaitable: Awaitable[object]) -> HookResult:
        try:
            return _as_result(await asyncio.wait_for(awaitable, self.timeout))
        except TimeoutError:
            self._log.log(f"hook_timeout:{name}", logging.WARNING,
                          "hook %s timed out after %.3gs", name, self.timeout)
            raise HookTimeout(f"{name} took longer than {self.timeout}s") from None
        except ProtocolError:
            raise
        except Exception as exc:
            self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> NoReturn:
        self._log.log(f"hook_failed:{name}", logging.ERROR, "hook %s failed", name,
                      exc_info=exc)
        raise HookFailed(f"{name} failed: {type(exc).__name__}") from None


def _as_result(value: object) -> HookResult:
    """A hook's return value as a :data:`HookResult` (a value of another type allows)."""
    if value is None or isinstance(value, bool | Refuse | Mapping):
        return value
    return None


def refused(result: object) -> Refuse | None:
    """The refusal a hook result means, or None when it allows."""
    if result is False:
        return Refuse()
    if isinstance(result, Refuse):
        return result
    return None

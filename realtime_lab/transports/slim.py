"""Make an open WebSocket connection smaller: drop what only the HTTP handshake needed.

Tornado keeps the whole HTTP request and response state of a WebSocket handler
for the life of the connection: the request headers (twice: the request's and
the ``HTTP1Connection``'s reference), the ``HTTP1Connection`` with its futures
and start lines, the response headers, the handler's ``ui`` namespace of template
helpers, and two empty ``collections.deque`` in the ``IOStream`` (760 bytes each
on CPython 3.11, because a deque preallocates a block). None of it is used once
the connection is open. :func:`release_http_state` and :func:`slim_stream` are
called by :class:`~realtime_lab.transports.ws_protocol.LabWebSocketProtocol`
after the handler's ``open()``; docs/performance.md ("Memory per connection")
has the measured effect.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any, NoReturn

from tornado.httputil import HTTPHeaders


class ListDeque(list):  # type: ignore[type-arg]
    """A list with ``popleft``: what IOStream needs of its deques, without the 760-byte block.

    IOStream uses its write-future queue and its write buffer's chunk queue with
    ``append``, ``[0]``, ``[-1]``, ``popleft``, ``clear``, iteration and ``len``;
    these queues hold a handful of entries at most, so ``pop(0)`` is cheap.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class ReleasedHeaders(HTTPHeaders):
    """The empty, read-only headers an open WebSocket's request keeps (one shared instance)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("request headers are released once the WebSocket is open; "
                           "read what you need in open()")

    add = __setitem__ = __delitem__ = _refuse  # type: ignore[assignment]


RELEASED_HEADERS = ReleasedHeaders()

#: Handler attributes that only the HTTP request/response used (reset to None).
_HANDLER_HTTP_STATE = ("ui", "_headers", "_write_buffer", "_transforms",
                       "path_args", "path_kwargs", "open_args", "open_kwargs")


def release_http_state(handler: Any) -> None:
    """Drop the request headers, the HTTP connection and the handler's response state.

    The request keeps its method, URI, remote address and query arguments (used
    in log lines and by ``get_query_argument``); its headers become the shared
    empty :data:`RELEASED_HEADERS`. Only for a handler whose WebSocket is open
    (the 101 response is finished and the stream detached).
    """
    request = getattr(handler, "request", None)
    if request is not None:
        request.headers = RELEASED_HEADERS
        request.connection = None
        request.server_connection = None
    for name in _HANDLER_HTTP_STATE:
        if hasattr(handler, name):
            setattr(handler, name, None)


def slim_stream(stream: Any) -> None:
    """Replace the IOStream's two deques by :class:`ListDeque` (contents kept)."""
    futures = getattr(stream, "_write_futures", None)
    if type(futures) is collections.deque:
        stream._write_futures = ListDeque(futures)
    buffer = getattr(stream, "_write_buffer", None)
    chunks = getattr(buffer, "_buffers", None)
    if type(chunks) is collections.deque:
        buffer._buffers = ListDeque(chunks)  # type: ignore[union-attr]


def prime_instance_keys(cls: type, names: Iterable[str]) -> None:
    """Enter ``names`` in ``cls``'s shared instance-dict keys before any real instance exists.

    CPython 3.11 keeps an instance's attributes in a compact array indexed by
    keys shared by all instances of the class (about 8 bytes per attribute).
    The shared table takes at most 30 names and shrinks its free room by one
    for every instance created, so a name first set late in an instance's life
    (a handler's ``path_args``, set during the request, while 64 other
    handshakes were creating handlers) may find no room left; that instance
    (and every later one setting it) then gets a full dict, 830 bytes for a
    handler, 1.6 KB for the protocol. Which connections were hit depended on
    how handshakes interleaved. Setting every name once on a throwaway instance
    at import fixes the table. Harmless on other Python versions.
    """
    probe: Any = object.__new__(cls)
    for name in names:
        object.__setattr__(probe, name, None)


__all__ = ["RELEASED_HEADERS", "ListDeque", "ReleasedHeaders", "prime_instance_keys",
           "release_http_state", "slim_stream"]

"""The data model: which values a message may carry, enforced once where they come in.

A value published by one client reaches subscribers on every wire format (JSON
text, MessagePack binary), is kept in history and may be re-sent later; a value
one of those formats cannot carry would fail while the broadcast is half done.
So every value that enters (a client message, an HTTP body, ``Hub.publish``,
presence and channel metadata) is checked against the one model every format
carries, before anything is stored or delivered:

* ``null``, booleans, strings, numbers, arrays, objects, and bytes (MessagePack
  ``bin``; ``{"$bytes": "<base64>"}`` in JSON);
* numbers are finite (no NaN, no infinities: ``1e400`` is refused), and
  integers are within ``INT_MIN .. INT_MAX`` (-2**63 .. 2**64-1, what
  MessagePack carries);
* strings and object keys are valid Unicode (no lone surrogate such as
  ``"\\ud800"``, which UTF-8 cannot encode); object keys are strings;
* containers nest at most ``MAX_DEPTH`` (64) levels below the message object.

A value outside the model raises :class:`~realtime_lab.errors.BadValue`
(``bad_value``, an input error; also a ``ValueError`` for Python callers).

The check costs little on the hot path: :func:`json_text_suspect` looks at a
JSON text with a few C-speed byte scans and says whether it *may* hold such a
value (a number token of 19 digits or with a 3-digit exponent, a ``\\ud...``
escape, more than ``MAX_DEPTH`` brackets); only then is the decoded value walked. MessagePack
cannot encode what the model refuses except non-string keys, non-finite floats
and depth, so its decoder walks every message (it always did).
"""

from __future__ import annotations

import math
import re
from math import isfinite as _isfinite
from typing import Any

from realtime_lab.errors import BadValue

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
MAX_DEPTH = 64

#: Where a value sits in the messages that carry it (the message object is depth 0):
#: ``data`` and channel metadata are one level down, a presence member's ``meta``
#: three (``presence_state.members.<user>.meta``).
DATA_DEPTH = 1
PRESENCE_META_DEPTH = 3

_SURROGATE = re.compile("[\ud800-\udfff]")
_SCALARS = (bool, type(None), bytes, bytearray, memoryview)
# json_text_suspect, first look: digits and "+" become "0", "{" becomes "[", "E" and "D"
# lower case; then a run of 19 "0" may be a long number, "e000" a 3-digit exponent.
_GATE = bytes.maketrans(b"123456789+ED{", b"0000000000ed[")
_LONG_DIGITS = "0" * 19  # 2**63 has 19 digits; no number with 18 or fewer is out of range
_BACKSLASH = ord("\\")
_DEEP_TEXT = 2 * MAX_DEPTH + 2  # a shorter text cannot nest deeper than MAX_DEPTH
# Where JSON puts a number token: at the start, or after one of these (in the scan).
_TOKEN_START = frozenset("[:, \t\n\r")


class _Outside(Exception):
    """Internal: a value outside the model; ``path`` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str | int] = []


def json_text_suspect(text: str | bytes) -> bool:
    """Whether a JSON text may hold a value outside the model (then walk the decoded value).

    False is a guarantee; True only means "look": for example the number 1e300, an
    emoji written as a ``\\ud83d\\ude00`` escape pair, or 70 objects in one array make
    it True.
    """
    if isinstance(text, str):
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a raw surrogate in the text: surely inside a string
            return True
    else:
        data = text
    # Made a str again because "in" on a str is the cheapest search there is ("in" on
    # bytes first tries the needle as an int; find() parses its arguments).
    scan = data.translate(_GATE).decode("latin-1")
    if (_LONG_DIGITS in scan or "e000" in scan) and _in_number_token(scan):
        return True
    if _BACKSLASH in data and "\\ud" in scan:  # an int "in" bytes: a memchr
        return True
    return len(scan) > _DEEP_TEXT and scan.count("[") > MAX_DEPTH


def _in_number_token(scan: str) -> bool:
    """Second look: whether a run of 19 digits, or an "e000", is in a number token
    (-?digits[.digits][e[+]digits]) rather than in a string such as a UUID or an id.

    A token starts at the start of the text or after "[", ":", "," or white space. An
    integer part of 18 digits and an exponent of 2 stay below 1e117: finite.
    """
    for needle, back in ((_LONG_DIGITS, "-"), ("e000", "0.-")):
        at = scan.find(needle)
        while at >= 0:
            start = at  # the first "0" of a run is where find() stops; the mantissa is
            while start > 0 and scan[start - 1] in back:  # made of "0", "." and a "-"
                start -= 1
            if start == 0 or scan[start - 1] in _TOKEN_START:
                return True
            at = scan.find(needle, at + 1)
    return False


def check_value(value: Any, *, depth: int = DATA_DEPTH, what: str = "data",
                request_id: int | str | None = None) -> None:
    """Raise :class:`BadValue` unless ``value`` is in the model.

    ``depth``: where the value sits in the message that carries it (the nesting
    bound counts from the message object); ``what`` names it in the error.
    """
    if not _fits([value], depth - 1, True):
        raise BadValue(_describe(what, _locate(value, depth, True)), request_id=request_id)


def check_message(message: Any, *, unicode_checked: bool = False) -> None:
    """Raise :class:`BadValue` unless a decoded inbound message is in the model.

    The error carries the message's ``id`` when that one is itself valid, so the
    client can match the refusal to its request. ``unicode_checked``: the strings
    came from a strict UTF-8 decoder (MessagePack), so none holds a surrogate.
    """
    strings = not unicode_checked
    if _fits([message], -1, strings):
        return
    rid = message.get("id") if isinstance(message, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int | str) or not _fits([rid], 0, True):
        rid = None
    raise BadValue(_describe("message", _locate(message, 0, strings)), request_id=rid)


_PLAIN = frozenset({bool, type(None), bytes})


def _fits(container: Any, depth: int, strings: bool) -> bool:
    """Whether every value in ``container`` (a list, tuple or dict at ``depth``) is in
    the model. The hot path: no path kept, no exception; :func:`_locate` says why."""
    if depth > MAX_DEPTH:
        return False
    if type(container) is dict:
        for key in container:
            if type(key) is not str or (strings and not key.isascii()
                                        and _SURROGATE.search(key) is not None):
                return False
        container = container.values()
    for value in container:
        kind = type(value)
        if kind is str:
            if strings and not value.isascii() and _SURROGATE.search(value) is not None:
                return False
        elif kind is int:
            if not INT_MIN <= value <= INT_MAX:
                return False
        elif kind is float:
            if not _isfinite(value):
                return False
        elif kind is dict or kind is list:
            if not _fits(value, depth + 1, strings):
                return False
        elif kind not in _PLAIN and not _fits_subclass(value, depth, strings):
            return False
    return True


def _fits_subclass(value: Any, depth: int, strings: bool) -> bool:
    """Tuples, bytearray, and subclasses of the model's types (an IntEnum, an
    OrderedDict...) held by a container at ``depth``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    base: type[Any]
    for base in (str, int, float):
        if isinstance(value, base):
            return _fits([base(value)], depth, strings)
    for base in (dict, list, tuple):
        if isinstance(value, base):
            return _fits(base(value), depth + 1, strings)
    return False


def _locate(value: Any, depth: int, strings: bool) -> _Outside:
    """The first value outside the model in ``value`` (which is known to hold one)."""
    try:
        _walk(value, depth, strings)
    except _Outside as out:
        return out
    return _Outside("not part of the data model")  # pragma: no cover - _fits said so


def _walk(value: Any, depth: int, strings: bool) -> None:
    """Raise :class:`_Outside`, with the path to it, for the first value outside the model."""
    kind = type(value)
    if kind is str:
        if strings and not value.isascii() and _SURROGATE.search(value) is not None:
            raise _Outside(_surrogate(value))
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Outside(f"the integer {_int_text(value)} is out of range "
                           f"(integers must be from -2**63 to 2**64-1)")
    elif kind is float:
        if not math.isfinite(value):
            raise _Outside(f"{value!r} is not a finite number (NaN and infinities, "
                           "e.g. 1e400, are not carried)")
    elif kind is dict:
        if depth > MAX_DEPTH:
            raise _Outside(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Outside(f"object keys must be strings, not {type(key).__name__}")
            if strings and not key.isascii() and _SURROGATE.search(key) is not None:
                raise _Outside(f"key: {_surrogate(key)}")
            try:
                _walk(item, depth + 1, strings)
            except _Outside as out:
                out.path.append(key)
                raise
    elif kind is list or kind is tuple:
        if depth > MAX_DEPTH:
            raise _Outside(f"nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1, strings)
            except _Outside as out:
                out.path.append(index)
                raise
    elif not isinstance(value, _SCALARS):
        _walk_subclass(value, depth, strings)


def _walk_subclass(value: Any, depth: int, strings: bool) -> None:
    base: type[Any]
    for base in (str, int, float, dict, list, tuple):
        if isinstance(value, base):
            _walk(base(value), depth, strings)
            return
    raise _Outside(f"{type(value).__name__} values are not part of the data model "
                   "(no MessagePack ext types, dates, sets...)")


def _surrogate(text: str) -> str:
    match = _SURROGATE.search(text)
    code = ord(match.group()) if match is not None else 0
    return f"a string holds a lone surrogate (U+{code:04X}), which is not valid Unicode"


def _int_text(value: int) -> str:
    if value.bit_length() > 128:
        return f"of {value.bit_length()} bits"
    return str(value)


def _describe(what: str, out: _Outside) -> str:
    """``what`` and the path to the value (at most 8 steps), then why it is refused."""
    steps = out.path[::-1]
    path = what + "".join(map(_step, steps[:8])) + ("..." if len(steps) > 8 else "")
    return f"{path}: {out.reason}"


def _step(step: str | int) -> str:
    if isinstance(step, int):
        return f"[{step}]"
    if step.isidentifier() and step.isascii() and len(step) <= 40:
        return f".{step}"
    # ascii(): no lone surrogate may reach the error message itself
    return f"[{ascii(step[:40])}{'...' if len(step) > 40 else ''}]"


__all__ = [
    "DATA_DEPTH",
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "PRESENCE_META_DEPTH",
    "check_message",
    "check_value",
    "json_text_suspect",
]

"""The data model: which values a message may carry, enforced once where they come in.

A value published by one client reaches subscribers on every wire format (JSON
text, MessagePack binary), is kept in history and may be re-sent years of loop
turns later; a value one of those formats cannot carry would fail while the
broadcast is half done. So every value that enters (a client message, an HTTP
body, ``Hub.publish``, presence and channel metadata) is checked against the
one model every format carries, before anything is stored or delivered:

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
value (a run of 19 digits, a 3-digit exponent, a ``\\ud...`` escape, more than
``MAX_DEPTH`` brackets); only then is the decoded value walked. MessagePack
cannot encode what the model refuses except non-string keys, non-finite floats
and depth, so its decoder walks every message (it always did).
"""

from __future__ import annotations

import math
import re
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
# For json_text_suspect: digits become "0", "{" becomes "[", "E"/"D" lower case, "+" "-".
_GATE = bytes.maketrans(b"123456789ED{+", b"000000000ed[-")
_LONG_DIGITS = b"0" * 19  # 2**63 has 19 digits; no number with 18 or fewer is out of range


class _Outside(Exception):
    """Internal: a value outside the model; ``path`` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str | int] = []


def json_text_suspect(text: str | bytes) -> bool:
    """Whether a JSON text may hold a value outside the model (then walk the decoded value).

    False is a guarantee; True only means "look": for example a string of 19 digits,
    or 70 objects in one array, make it True.
    """
    if isinstance(text, str):
        try:
            text = text.encode("utf-8")
        except UnicodeEncodeError:  # a raw surrogate in the text: surely inside a string
            return True
    scan = text.translate(_GATE)
    return (_LONG_DIGITS in scan or b"e000" in scan or b"e-000" in scan
            or b"\\ud" in scan or scan.count(b"[") > MAX_DEPTH)


def check_value(value: Any, *, depth: int = DATA_DEPTH, what: str = "data",
                request_id: int | str | None = None) -> None:
    """Raise :class:`BadValue` unless ``value`` is in the model.

    ``depth``: where the value sits in the message that carries it (the nesting
    bound counts from the message object); ``what`` names it in the error.
    """
    try:
        _walk(value, depth, True)
    except _Outside as out:
        raise BadValue(_describe(what, out), request_id=request_id) from None


def check_message(message: Any, *, unicode_checked: bool = False) -> None:
    """Raise :class:`BadValue` unless a decoded inbound message is in the model.

    The error carries the message's ``id`` when that one is itself valid, so the
    client can match the refusal to its request. ``unicode_checked``: the strings
    came from a strict UTF-8 decoder (MessagePack), so none holds a surrogate.
    """
    try:
        _walk(message, 0, not unicode_checked)
    except _Outside as out:
        rid = message.get("id") if isinstance(message, dict) else None
        if not _valid_id(rid):
            rid = None
        raise BadValue(_describe("message", out), request_id=rid) from None


def _valid_id(rid: Any) -> bool:
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return False
    try:
        _walk(rid, 1, True)
    except _Outside:
        return False
    return True


def _walk(value: Any, depth: int, strings: bool) -> None:
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
            if type(key) is not str and not isinstance(key, str):
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
    """Subclasses of the model's types (an IntEnum, an OrderedDict...) count as their base."""
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

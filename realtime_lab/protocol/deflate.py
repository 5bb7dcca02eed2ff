"""permessage-deflate (RFC 7692), sans-I/O: policy, negotiation, compress once, inflate safely.

* :class:`CompressionPolicy` is what a server operator configures (offer or not,
  level, memory level, window bits, context takeover, size threshold).
* :func:`negotiate` reads a client's ``Sec-WebSocket-Extensions`` offers and returns
  the :class:`DeflateParams` agreed (or None), whose :meth:`DeflateParams.header`
  is the server's response.
* :class:`Deflater` compresses one message payload without context takeover, so
  the same compressed bytes are valid for every connection that agreed the same
  parameters: a broadcast is compressed once, not once per subscriber.
* :class:`Inflater` decompresses client messages with a hard limit on the
  decompressed size (decompression bombs are refused without inflating them).

The server always answers ``server_no_context_takeover`` (RFC 7692 7.1.1.1 lets a
server add it), which is what makes shared frames possible and keeps no
compressor state per connection. By default it also answers
``client_no_context_takeover``, so no inflate window is kept between messages.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

EXTENSION = "permessage-deflate"
TAIL = b"\x00\x00\xff\xff"
_PARAMS = ("server_no_context_takeover", "client_no_context_takeover",
           "server_max_window_bits", "client_max_window_bits")


class DeflateError(Exception):
    """Compressed input that is not valid DEFLATE (close with 1002)."""


class InflateTooBig(Exception):
    """A message whose decompressed size passes the limit (close with 1009)."""


@dataclass(frozen=True, kw_only=True)
class CompressionPolicy:
    """How the server offers and uses permessage-deflate (docs/compression.md).

    Attributes:
        enabled: accept a client's permessage-deflate offer at all.
        level: zlib level 0-9 for outbound messages (compressed once per broadcast).
        mem_level: zlib memory level 1-9 for the outbound compressor.
        server_max_window_bits: LZ77 window (9-15) for outbound messages; a client
            asking for less gets what it asked for (8 is raised to 9 by zlib, so an
            offer of 8 is declined).
        client_max_window_bits: the window (8-15) clients may use, told to clients
            that offered the parameter; None accepts what the client says.
        client_context_takeover: let clients keep their compression context between
            messages. True (default) keeps one inflate window per connection that
            sends compressed messages, and works with every client. False answers
            ``client_no_context_takeover`` and saves about 32 KiB per such
            connection, but clients that ignore the parameter break: plain Tornado
            clients (``websocket_connect`` with compression) drop it and are closed
            with 1002 on their second compressed message.
        threshold: payloads shorter than this many bytes are sent uncompressed
            (RFC 7692 allows this per message).
        shared: compress a broadcast once for all connections with the same
            parameters (default). False compresses each delivery separately: only
            useful to measure what sharing saves.
    """

    enabled: bool = True
    level: int = 6
    mem_level: int = 8
    server_max_window_bits: int = 15
    client_max_window_bits: int | None = None
    client_context_takeover: bool = True
    threshold: int = 256
    shared: bool = True

    def __post_init__(self) -> None:
        if not -1 <= self.level <= 9:
            raise ValueError(f"level must be -1 to 9, got {self.level!r}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be 1 to 9, got {self.mem_level!r}")
        if not 9 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be 9 to 15 "
                             f"(zlib cannot make 8), got {self.server_max_window_bits!r}")
        cmwb = self.client_max_window_bits
        if cmwb is not None and not 8 <= cmwb <= 15:
            raise ValueError(f"client_max_window_bits must be 8 to 15, got {cmwb!r}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")

    @classmethod
    def off(cls) -> CompressionPolicy:
        """A policy that never negotiates compression."""
        return cls(enabled=False)


def as_policy(obj: object) -> CompressionPolicy:
    """A :class:`CompressionPolicy` from a policy, or from a bool (True: the defaults,
    False or None: never compress)."""
    if isinstance(obj, CompressionPolicy):
        return obj
    if isinstance(obj, bool) or obj is None:
        return CompressionPolicy(enabled=bool(obj))
    raise TypeError(f"not a compression policy: {obj!r}")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The parameters agreed with one client (what the server answered)."""

    server_max_window_bits: int = 15
    client_max_window_bits: int | None = None  # None: not in the answer (15)
    client_no_context_takeover: bool = True
    server_window_in_answer: bool = False

    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` response value."""
        parts = [EXTENSION, "server_no_context_takeover"]
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_window_in_answer:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, str | None]:
        """The response parameters as (name, value or None) pairs, for Tornado's header writer."""
        out: dict[str, str | None] = {"server_no_context_takeover": None}
        if self.client_no_context_takeover:
            out["client_no_context_takeover"] = None
        if self.server_window_in_answer:
            out["server_max_window_bits"] = str(self.server_max_window_bits)
        if self.client_max_window_bits is not None:
            out["client_max_window_bits"] = str(self.client_max_window_bits)
        return out


def parse_offers(header: str) -> list[dict[str, str | None]] | None:
    """The permessage-deflate offers in an extensions header, in order.

    Each offer is a dict of parameters; an offer that cannot be parsed, repeats
    a parameter or has an unknown one is left out (declined). Returns None when
    no offer names permessage-deflate at all.
    """
    offers: list[dict[str, str | None]] = []
    seen = False
    for item in _split(header, ","):
        tokens = [t.strip() for t in _split(item, ";")]
        if not tokens or tokens[0].lower() != EXTENSION:
            continue
        seen = True
        params: dict[str, str | None] = {}
        ok = True
        for token in tokens[1:]:
            if not token:
                ok = False
                break
            name, eq, value = token.partition("=")
            name = name.strip().lower()
            val: str | None = value.strip().strip('"') if eq else None
            if name not in _PARAMS or name in params:
                ok = False
                break
            params[name] = val
        if ok:
            offers.append(params)
    return offers if seen else None


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s for s in out if s.strip()]


def _bits(value: str | None, low: int) -> int | None:
    if value is None or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        return None
    bits = int(value)
    return bits if low <= bits <= 15 else None


def negotiate(header: str | None, policy: CompressionPolicy) -> DeflateParams | None:
    """Accept the first acceptable permessage-deflate offer, or None (no compression)."""
    if not policy.enabled or not header:
        return None
    for offer in parse_offers(header) or []:
        params = _accept(offer, policy)
        if params is not None:
            return params
    return None


def _accept(offer: dict[str, str | None], policy: CompressionPolicy) -> DeflateParams | None:
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in offer and offer[flag] is not None:
            return None
    server_bits = policy.server_max_window_bits
    in_answer = False
    if "server_max_window_bits" in offer:
        asked = _bits(offer["server_max_window_bits"], 8)
        if asked is None or asked < 9:  # zlib cannot compress with an 8-bit window
            return None
        server_bits = min(server_bits, asked)
        in_answer = True
    client_bits: int | None = None
    if "client_max_window_bits" in offer:
        raw = offer["client_max_window_bits"]
        offered = 15 if raw is None else _bits(raw, 8)
        if offered is None:
            return None
        limit = policy.client_max_window_bits
        client_bits = offered if limit is None else min(offered, limit)
        if raw is None and limit is None:
            client_bits = None  # nothing to say: the client keeps its default (15)
    no_client_takeover = ("client_no_context_takeover" in offer
                          or not policy.client_context_takeover)
    return DeflateParams(server_bits, client_bits, no_client_takeover, in_answer)


@dataclass(frozen=True, eq=False, slots=True)
class Deflater:
    """Compress message payloads without context takeover; one instance per parameter set.

    Instances are interned (:func:`deflater`), so equal parameters give the same
    object and a per-broadcast cache can key on identity.
    """

    level: int
    mem_level: int
    wbits: int
    threshold: int
    shared: bool

    def compress(self, payload: bytes) -> bytes:
        """The RFC 7692 payload: raw DEFLATE, sync-flushed, without the 00 00 ff ff tail."""
        comp = zlib.compressobj(self.level, zlib.DEFLATED, -self.wbits, self.mem_level)
        data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4] if data.endswith(TAIL) else data


@lru_cache(maxsize=256)
def deflater(level: int, mem_level: int, wbits: int, threshold: int, shared: bool) -> Deflater:
    """The interned :class:`Deflater` for these settings."""
    return Deflater(level, mem_level, wbits, threshold, shared)


def deflater_for(params: DeflateParams, policy: CompressionPolicy) -> Deflater:
    """The outbound compressor of a connection that agreed ``params`` under ``policy``."""
    return deflater(policy.level, policy.mem_level, params.server_max_window_bits,
                    policy.threshold, policy.shared)


class Inflater:
    """Decompress client messages, refusing any whose inflated size passes ``max_size``.

    With client context takeover one zlib object lives as long as the
    connection; without it one is made per message and dropped after it.
    Memory is bounded by the 32 KiB window plus ``max_size``: zlib is asked for at
    most ``max_size + 1`` bytes, so a bomb is never inflated past the limit.
    """

    __slots__ = ("max_size", "persistent", "_z", "_size")

    def __init__(self, max_size: int, *, persistent: bool = False) -> None:
        self.max_size = max_size
        self.persistent = persistent
        self._z: zlib._Decompress | None = None  # made on the first compressed message
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        """Decompress one frame's payload of the current message; return the new output."""
        if self._z is None:
            self._z = zlib.decompressobj(-15)
        z = self._z
        try:
            out = z.decompress(data, self.max_size - self._size + 1)
        except zlib.error as exc:
            self.reset()
            raise DeflateError(f"invalid compressed data: {exc}") from None
        self._size += len(out)
        if self._size > self.max_size or z.unconsumed_tail:
            self.reset()
            raise InflateTooBig(f"message larger than {self.max_size} bytes once decompressed")
        return out

    def finish(self) -> bytes:
        """End the current message (feeds the 00 00 ff ff tail); return the last output."""
        out = self.feed(TAIL)
        if self._z is not None and self._z.eof and self._z.unused_data not in (b"", TAIL):
            self.reset()
            raise DeflateError("data after the final compressed block")
        self._size = 0
        if not self.persistent or (self._z is not None and self._z.eof):
            self._z = None
        return out

    def reset(self) -> None:
        self._size = 0
        self._z = None

    def inflate(self, payload: bytes) -> bytes:
        """Decompress one whole message."""
        return self.feed(payload) + self.finish()

"""Wire formats: which codec and which compression one connection receives.

A connection's :class:`WireFormat` is fixed at the handshake: the codec from the
WebSocket subprotocol (``realtime-lab.v1.json`` or ``realtime-lab.v1.msgpack``;
none means JSON) and the outbound compressor from permessage-deflate. Wire
formats are interned, so connections that agreed the same thing share one object,
and :class:`FrameVariants` (one per broadcast) builds each distinct frame once,
lazily, keyed by that object: a broadcast to 1000 subscribers of three kinds costs
three encodings, not 1000.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from realtime_lab.protocol import codec
from realtime_lab.protocol.deflate import Deflater
from realtime_lab.protocol.frames import OP_BINARY, OP_TEXT, build_frame, frame_header

JSON = "json"
MSGPACK = "msgpack"
SUBPROTOCOLS: dict[str, str] = {
    "realtime-lab.v1.json": JSON,
    "realtime-lab.v1.msgpack": MSGPACK,
}
SUBPROTOCOL_OF: dict[str, str] = {v: k for k, v in SUBPROTOCOLS.items()}

#: A codec that turns one hub message into whole WebSocket frames: zero (the
#: message means nothing in that protocol), one, or several, concatenated.
FrameEncoder = Callable[[dict[str, object]], bytes]

#: Codecs of other protocols spoken on the same hub (a protocol adapter registers
#: its own: ``realtime_lab.pusher`` registers ``pusher``). Never compressed.
FRAME_CODECS: dict[str, FrameEncoder] = {}


#: ``personal(message, user)``: the frames of a broadcast for one recipient whose
#: protocol must not show it something (a Pusher client is never told that it joined
#: itself), or None for the frames every recipient shares.
PersonalEncoder = Callable[[dict[str, object], str], "bytes | None"]
PERSONAL_CODECS: dict[str, PersonalEncoder] = {}


def register_frame_codec(name: str, encode: FrameEncoder,
                         personal: PersonalEncoder | None = None) -> None:
    """Let connections use codec ``name``, whose frames ``encode`` builds from each
    message the hub sends (a protocol adapter's translation of the native messages).

    A broadcast still encodes once per codec in use, not once per subscriber;
    ``personal`` (see :data:`PersonalEncoder`) is asked per recipient and should
    answer None at once for the messages it leaves alone.
    """
    if name in (JSON, MSGPACK):
        raise ValueError(f"{name!r} is a built-in codec")
    FRAME_CODECS[name] = encode
    if personal is not None:
        PERSONAL_CODECS[name] = personal


@dataclass(frozen=True, eq=False, slots=True)
class WireFormat:
    """Codec plus outbound compressor of a connection (interned: compare with ``is``)."""

    codec: str = JSON
    deflate: Deflater | None = None

    @property
    def compressed(self) -> bool:
        return self.deflate is not None

    @property
    def cacheable(self) -> bool:
        """Whether one frame can serve every connection with this format."""
        return self.deflate is None or self.deflate.shared

    @property
    def plain(self) -> WireFormat:
        """The same codec without compression."""
        return wire_format(self.codec, None)

    def label(self) -> str:
        return self.codec + ("+deflate" if self.deflate is not None else "")

    def __repr__(self) -> str:
        return f"<WireFormat {self.label()}>"


_INTERNED: dict[tuple[str, Deflater | None], WireFormat] = {}


def wire_format(codec_name: str = JSON, deflate: Deflater | None = None) -> WireFormat:
    """The interned wire format for a codec and an outbound compressor (or None)."""
    wire = _INTERNED.get((codec_name, deflate))
    if wire is None:
        if codec_name not in (JSON, MSGPACK) and codec_name not in FRAME_CODECS:
            raise ValueError(f"unknown codec {codec_name!r}; expected json, msgpack or a "
                             "registered one (register_frame_codec)")
        if deflate is not None and codec_name in FRAME_CODECS:
            raise ValueError(f"codec {codec_name!r} builds its own frames: no compression")
        wire = _INTERNED[(codec_name, deflate)] = WireFormat(codec_name, deflate)
    return wire


JSON_WIRE = wire_format(JSON)


def encode_payload(codec_name: str, message: dict[str, Any]) -> bytes:
    """A message's frame payload in ``codec_name``."""
    if codec_name == JSON:
        return codec.encode(message).encode("utf-8")
    from realtime_lab.protocol import msgpack_codec

    return msgpack_codec.encode(message)


def build(wire: WireFormat, payload: bytes) -> bytes:
    """The frame carrying an encoded ``payload`` on ``wire`` (compressed if it should be)."""
    opcode = OP_TEXT if wire.codec == JSON else OP_BINARY
    deflate = wire.deflate
    if deflate is not None and len(payload) >= deflate.threshold:
        data = deflate.compress(payload)
        return frame_header(opcode, len(data), rsv1=True) + data
    return build_frame(opcode, payload)


def frame_for(wire: WireFormat, message: dict[str, Any]) -> bytes:
    """Encode and frame one message for one connection (``Hub.send``)."""
    framer = FRAME_CODECS.get(wire.codec)
    if framer is not None:
        return framer(message)
    return build(wire, encode_payload(wire.codec, message))


def _strip_header(frame: bytes) -> bytes:
    """The payload of an unmasked frame built by :mod:`realtime_lab.protocol.frames`."""
    length = frame[1] & 0x7F
    return frame[2 + (2 if length == 126 else 8 if length == 127 else 0):]


class FrameVariants:
    """The frames of one broadcast, one per wire format in use, each built once.

    Made from the plain JSON text frame the hub already built (and optionally the
    message dict). Compressed JSON reuses the JSON payload as is; MessagePack is
    encoded from the message (decoded back from the JSON text if no dict was given).
    """

    __slots__ = ("json_frame", "message", "_frames", "_payloads")

    def __init__(self, json_frame: bytes, message: dict[str, Any] | None = None) -> None:
        self.json_frame = json_frame
        self.message = message
        self._frames: dict[WireFormat, bytes] = {JSON_WIRE: json_frame}
        self._payloads: dict[str, bytes] = {}

    def payload(self, codec_name: str) -> bytes:
        """The uncompressed payload in ``codec_name``, encoded at most once."""
        data = self._payloads.get(codec_name)
        if data is None:
            if codec_name == JSON:
                data = _strip_header(self.json_frame)
            else:
                if self.message is None:
                    self.message = codec.decode(_strip_header(self.json_frame))
                assert self.message is not None
                data = encode_payload(codec_name, self.message)
            self._payloads[codec_name] = data
        return data

    def get(self, wire: WireFormat) -> bytes:
        """The frame for a connection with this wire format."""
        frame = self._frames.get(wire)
        if frame is None:
            framer = FRAME_CODECS.get(wire.codec)
            if framer is not None:  # another protocol's frames, built once
                if self.message is None:
                    self.message = codec.decode(_strip_header(self.json_frame))
                assert self.message is not None
                frame = self._frames[wire] = framer(self.message)
                return frame
            payload = self.payload(wire.codec)
            deflate = wire.deflate
            if deflate is not None and len(payload) < deflate.threshold:
                return self.get(wire.plain)
            frame = build(wire, payload)
            if wire.cacheable:
                self._frames[wire] = frame
        return frame

    def for_recipient(self, wire: WireFormat, user: str) -> bytes:
        """The frame for one connection of ``user`` with this wire format: its codec's
        personal frames when it has some for this message, else :meth:`get`."""
        personal = PERSONAL_CODECS.get(wire.codec)
        if personal is not None:
            if self.message is None:
                self.message = codec.decode(_strip_header(self.json_frame))
            assert self.message is not None
            frames = personal(self.message, user)
            if frames is not None:
                return frames
        return self.get(wire)

    def built(self) -> int:
        """How many distinct frames were built (for tests and the lab)."""
        return len(self._frames)

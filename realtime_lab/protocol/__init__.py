"""Sans-I/O protocol layer: messages, the JSON codec, frames and close codes."""

from realtime_lab.protocol.close_codes import CloseCode, ReconnectAdvice, advice_for
from realtime_lab.protocol.codec import decode, encode
from realtime_lab.protocol.messages import (
    PROTOCOL_VERSION,
    ClientMessage,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ClientMessage",
    "CloseCode",
    "Ping",
    "Publish",
    "ReconnectAdvice",
    "Subscribe",
    "Unsubscribe",
    "advice_for",
    "decode",
    "encode",
    "parse_client_message",
]

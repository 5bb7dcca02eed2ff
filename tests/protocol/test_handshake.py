"""The opening handshake helpers (HTTP/1.1 upgrade and RFC 8441 extended CONNECT)."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from realtime_lab.protocol.connection import ConnectionState, TextMessage
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.protocol.handshake import (
    Agreement,
    HandshakeError,
    accept_key,
    agree,
    check_connect,
    check_upgrade,
    choose_subprotocol,
    offered_subprotocols,
    response_101,
    response_headers,
)
from realtime_lab.protocol.wire import JSON_WIRE

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3


def upgrade(**extra: str) -> HTTPHeaders:
    headers = HTTPHeaders({"Host": "example.com", "Upgrade": "websocket",
                           "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
                           "Sec-WebSocket-Version": "13"})
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    return headers


def test_accept_key_of_the_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_returns_its_key() -> None:
    assert check_upgrade("GET", upgrade()) == KEY
    # token lists and any case, as browsers and proxies send them
    assert check_upgrade("GET", upgrade(Connection="keep-alive, Upgrade",
                                        Upgrade="WebSocket")) == KEY


@pytest.mark.parametrize(("method", "headers", "status"), [
    ("POST", upgrade(), 405),
    ("GET", upgrade(Upgrade="h2c"), 400),
    ("GET", upgrade(Connection="keep-alive"), 400),
    ("GET", upgrade(Sec_WebSocket_Version="8"), 426),
    ("GET", upgrade(Sec_WebSocket_Key="c2hvcnQ="), 400),  # decodes to 5 bytes
    ("GET", upgrade(Sec_WebSocket_Key="not base64!!"), 400),
])
def test_refused_upgrades_say_which_status(method: str, headers: HTTPHeaders,
                                           status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade(method, headers)
    assert info.value.status == status and info.value.reason
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers


def test_missing_key_is_refused() -> None:
    headers = upgrade()
    del headers["Sec-WebSocket-Key"]
    with pytest.raises(HandshakeError):
        check_upgrade("GET", headers)


def test_extended_connect_has_no_key_and_lower_case_headers() -> None:
    h2 = {"sec-websocket-version": "13", "sec-websocket-protocol": "realtime-lab.v1.json",
          "sec-websocket-extensions": "permessage-deflate; client_max_window_bits"}
    check_connect("CONNECT", "websocket", h2)
    for method, protocol in (("GET", "websocket"), ("CONNECT", "h2c"), ("CONNECT", None)):
        with pytest.raises(HandshakeError) as info:
            check_connect(method, protocol, h2)
        assert info.value.status == 400
    with pytest.raises(HandshakeError) as info:
        check_connect("CONNECT", "websocket", {"sec-websocket-version": "12"})
    assert info.value.status == 426
    agreement = agree(h2, CompressionPolicy())
    assert agreement.subprotocol == "realtime-lab.v1.json" and agreement.deflate is not None
    assert response_headers(agreement) == [
        ("Sec-WebSocket-Protocol", "realtime-lab.v1.json"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover")]


def test_subprotocols_are_chosen_in_the_client_order() -> None:
    headers = upgrade(Sec_WebSocket_Protocol="chat, realtime-lab.v1.msgpack,realtime-lab.v1.json")
    assert offered_subprotocols(headers) == ["chat", "realtime-lab.v1.msgpack",
                                             "realtime-lab.v1.json"]
    offered = offered_subprotocols(headers)
    assert choose_subprotocol(offered, binary=True) == "realtime-lab.v1.msgpack"
    assert choose_subprotocol(offered, binary=False) == "realtime-lab.v1.json"
    assert choose_subprotocol(["chat"]) is None


def test_agreement_and_the_101_answer() -> None:
    headers = upgrade(Sec_WebSocket_Extensions="permessage-deflate; client_max_window_bits",
                      Sec_WebSocket_Protocol="realtime-lab.v1.msgpack")
    agreement = agree(headers, CompressionPolicy(), lambda offered: offered[0])
    assert agreement.wire.label() == "msgpack+deflate"
    answer = response_101(check_upgrade("GET", headers), agreement)
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: realtime-lab.v1.msgpack\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n")


def test_no_offer_or_compression_off_means_plain_json() -> None:
    assert agree(upgrade(), CompressionPolicy()) == Agreement()
    off = agree(upgrade(Sec_WebSocket_Extensions="permessage-deflate"), CompressionPolicy.off())
    assert off.deflate is None and off.wire is JSON_WIRE


def test_the_connection_made_from_the_agreement_starts_open() -> None:
    agreement = agree(upgrade(Sec_WebSocket_Extensions="permessage-deflate"),
                      CompressionPolicy(threshold=0))
    conn = agreement.connection(max_message_bytes=1000)
    assert conn.state is ConnectionState.OPEN and conn.max_message_bytes == 1000
    assert conn.send_text("x")[0] & 0x40, "compressed with the agreed deflater"
    conn.receive_data(b"\x81\x81\x00\x00\x00\x00y")
    assert conn.next_event() == TextMessage("y")

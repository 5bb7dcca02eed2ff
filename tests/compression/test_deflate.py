"""permessage-deflate, sans-I/O: negotiation (RFC 7692 7), shared deflate, bounded inflate."""

from __future__ import annotations

import os
import zlib

import pytest

from realtime_lab.protocol.deflate import (
    CompressionPolicy,
    DeflateError,
    DeflateParams,
    Inflater,
    InflateTooBig,
    as_policy,
    deflater,
    negotiate,
    parse_offers,
)

POLICY = CompressionPolicy()  # the default: clients keep their context (works with all)
SAVER = CompressionPolicy(client_context_takeover=False)  # answers client_no_context_takeover


def header(offer: str, policy: CompressionPolicy = POLICY) -> str | None:
    params = negotiate(offer, policy)
    return None if params is None else params.header()


def test_browser_offer_gets_server_no_context_takeover() -> None:
    # Chromium and Firefox offer exactly this.
    assert header("permessage-deflate; client_max_window_bits") == (
        "permessage-deflate; server_no_context_takeover")
    assert header("permessage-deflate; client_max_window_bits", SAVER) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover")


def test_websockets_library_offer() -> None:
    assert header("permessage-deflate; client_max_window_bits=12") == (
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=12")
    assert header("permessage-deflate; client_max_window_bits=12", SAVER) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "client_max_window_bits=12")


def test_server_window_is_the_smaller_of_offer_and_policy() -> None:
    params = negotiate("permessage-deflate; server_max_window_bits=10", SAVER)
    assert params == DeflateParams(10, None, True, True)
    assert "server_max_window_bits=10" in params.header()
    small = CompressionPolicy(server_max_window_bits=9, client_context_takeover=False)
    assert negotiate("permessage-deflate; server_max_window_bits=12", small) == DeflateParams(
        9, None, True, True)


def test_unacceptable_offers_fall_through_to_the_next() -> None:
    # 8 bits cannot be produced by zlib; unknown params, duplicates and bad values are declined.
    for bad in ("permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; foo=1", "permessage-deflate; server_no_context_takeover=1",
                "permessage-deflate; client_max_window_bits=16",
                "permessage-deflate; client_max_window_bits; client_max_window_bits",
                "permessage-deflate; server_max_window_bits"):
        assert negotiate(bad, SAVER) is None, bad
        assert negotiate(bad + ", permessage-deflate", SAVER) == DeflateParams(15, None, True)


def test_policy_off_and_other_extensions() -> None:
    assert negotiate("permessage-deflate", CompressionPolicy.off()) is None
    assert negotiate("x-webkit-deflate-frame", POLICY) is None
    assert parse_offers("foo, bar") is None
    assert negotiate(None, POLICY) is None


def test_client_context_takeover_and_window_limit_from_policy() -> None:
    keep = CompressionPolicy(client_context_takeover=True, client_max_window_bits=10)
    params = negotiate("permessage-deflate; client_max_window_bits", keep)
    assert params == DeflateParams(15, 10, False, False)
    assert params.header() == ("permessage-deflate; server_no_context_takeover; "
                               "client_max_window_bits=10")
    # a client that asks for no context takeover gets it whatever the policy
    asked = negotiate("permessage-deflate; client_no_context_takeover", keep)
    assert asked is not None and asked.client_no_context_takeover


def test_policy_validation_and_conversion() -> None:
    with pytest.raises(ValueError):
        CompressionPolicy(server_max_window_bits=8)
    with pytest.raises(ValueError):
        CompressionPolicy(level=10)
    assert as_policy(POLICY) is POLICY
    assert as_policy(True) == POLICY
    assert as_policy(False).enabled is False and as_policy(None).enabled is False
    with pytest.raises(TypeError):
        as_policy("deflate")


def test_deflater_output_is_rfc7692_payload() -> None:
    data = b'{"type":"message","data":"' + b"abc" * 400 + b'"}'
    out = deflater(6, 8, 15, 0, True).compress(data)
    assert not out.endswith(b"\x00\x00\xff\xff") and len(out) < len(data) // 10
    assert zlib.decompressobj(-15).decompress(out + b"\x00\x00\xff\xff") == data
    # the same bytes whoever decompresses them: no context is carried over
    assert deflater(6, 8, 15, 0, True).compress(data) == out


def compress(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_inflater_refuses_a_bomb_without_inflating_it() -> None:
    bomb = compress(b"\x00" * (50 << 20))  # 50 MiB of zeros in about 50 KB
    assert len(bomb) < 100_000
    inflater = Inflater(64 * 1024)
    with pytest.raises(InflateTooBig):
        inflater.inflate(bomb)
    # still usable afterwards (for the next message), and fragment by fragment
    assert inflater.inflate(compress(b"hello")) == b"hello"
    payload = compress(os.urandom(100) * 50)
    assert inflater.feed(payload[:10]) + inflater.feed(payload[10:]) + inflater.finish() == (
        zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"))


def test_inflater_refuses_corrupt_data() -> None:
    with pytest.raises(DeflateError):
        Inflater(1024).inflate(b"\xff\xff\xff\xff garbage")


def test_persistent_inflater_keeps_context() -> None:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = (c.compress(b"hello hello") + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    second = (c.compress(b"hello hello") + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    inflater = Inflater(1024, persistent=True)
    assert inflater.inflate(first) == b"hello hello"
    assert inflater.inflate(second) == b"hello hello"

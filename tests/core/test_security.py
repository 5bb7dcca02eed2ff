"""Security helpers without sockets: origins, connect tokens, admission counts, options."""

from __future__ import annotations

import pytest

from realtime_lab.core import ServerOptions
from realtime_lab.core.security import (
    Admission,
    handshake_origin_allowed,
    host_allowed,
    host_name,
    make_token,
    origin_allowed,
    verify_token,
)
from realtime_lab.errors import ServerFull, TokenExpired, TooManyConnectionsFromIP, Unauthorized


@pytest.mark.parametrize(("origin", "allowed", "ok"), [
    (None, None, True),  # non-browser clients send no Origin
    ("http://h:1", None, True),
    ("http://other:1", None, False),
    ("https://app.example.com", ("https://app.example.com",), True),
    ("https://APP.example.com/", ("https://app.example.com",), True),
    ("https://evil.com", ("https://app.example.com",), False),
    ("https://a.example.com", ("https://*.example.com",), True),
    ("https://example.com.evil.io", ("https://*.example.com",), False),
    ("http://a.example.com", ("https://*.example.com",), False),
    ("https://anything", ("*",), True),
    (None, ("https://app.example.com",), False),
])
def test_origin_allowed(origin: str | None, allowed: tuple[str, ...] | None, ok: bool) -> None:
    assert origin_allowed(origin, allowed, "h:1") is ok


APP = ("https://app.example.com",)


@pytest.mark.parametrize(("origin", "allowed", "site", "ok"), [
    (None, APP, None, True),  # not a browser
    ("http://h:1", APP, None, True),  # same origin as Host, allow-list or not
    ("http://H:1", None, None, True),
    ("http://other:1", APP, None, False),
    ("https://app.example.com", APP, None, True),
    ("http://other:1", APP, "same-origin", True),  # the browser says so
    ("http://other:1", APP, "none", True),
    ("http://h:1", APP, "cross-site", False),  # the browser says it is not
    ("https://app.example.com", APP, "cross-site", True),
    (None, APP, "cross-site", False),
    ("http://other:1", None, "same-site", False),
])
def test_handshake_origin_follows_the_browsers_same_origin_rule(
        origin: str | None, allowed: tuple[str, ...] | None, site: str | None,
        ok: bool) -> None:
    assert handshake_origin_allowed(origin, allowed, "h:1", site) is ok


def test_tokens() -> None:
    token = make_token("s3cret", "ada", ttl=60, now=1000, role="admin")
    claims = verify_token("s3cret", token, now=1030)
    assert claims["user"] == "ada" and claims["role"] == "admin"
    with pytest.raises(TokenExpired):
        verify_token("s3cret", token, now=1061)
    with pytest.raises(Unauthorized, match="signature"):
        verify_token("other", token, now=1030)
    payload, sig = token.split(".")
    forged = make_token("x", "root", now=1000).split(".")[0] + "." + sig
    with pytest.raises(Unauthorized):
        verify_token("s3cret", forged, now=1030)
    for bad in (None, "", "nodot", "a.b", "!!.??"):
        with pytest.raises(Unauthorized):
            verify_token("s3cret", bad, now=1030)


def test_admission_counts_total_and_per_ip() -> None:
    adm = Admission(max_total=3, max_per_ip=2)
    adm.check("a")
    adm.add("s1", "a")
    adm.add("s2", "a")
    with pytest.raises(TooManyConnectionsFromIP):
        adm.check("a")
    adm.check("b")
    adm.add("s3", "b")
    with pytest.raises(ServerFull):
        adm.check("c")
    adm.remove("s1")
    adm.remove("s1")  # idempotent
    adm.check("a")
    assert adm.total == 2 and adm.per_ip == {"a": 1, "b": 1}


def test_security_defaults_and_validation() -> None:
    opts = ServerOptions()
    assert opts.allowed_origins is None and opts.max_connections == 50_000
    assert opts.max_connections_per_ip == 10_000 and opts.publish_channels == "*"
    assert opts.handshake_timeout == 10.0 and opts.idle_timeout is None
    assert opts.token_secret is None and opts.certfile is None
    assert ServerOptions(allowed_origins="https://a").allowed_origins == ("https://a",)
    for bad in ({"max_connections": 0}, {"idle_timeout": -1}, {"certfile": "x"},
                {"heartbeat_min_interval": 5}, {"heartbeat_min_interval": 9,
                                                "heartbeat_max_interval": 3},
                {"heartbeat_jitter": 1.5}, {"droppable_priority": "urgent"}):
        with pytest.raises(ValueError):
            ServerOptions(**bad)


# ---------------------------------------------------------------------------- Host check


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8765", "127.0.0.1"), ("LocalHost", "localhost"), ("[::1]:80", "::1"),
    ("[::1]", "::1"), ("example.com.:443", "example.com"), ("a.b", "a.b"),
    ("example.com:http", None), ("[::1", None), ("[::1]x", None), ("a/b", None),
    ("user@evil", None), ("", None), (":80", None),
])
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_host_allowed_loopback_always_and_patterns() -> None:
    assert host_allowed("evil.example:80", None)  # no check
    assert host_allowed(None, ())  # no Host header: not a browser
    for host in ("localhost:1", "127.0.0.1:1", "127.9.9.9", "[::1]:1"):
        assert host_allowed(host, ())
    assert not host_allowed("evil.example:80", ())
    assert not host_allowed("localhost.evil.example", ())
    allowed = ("rt.example.com", "*.lab.example.org")
    assert host_allowed("RT.example.com:443", allowed)
    assert host_allowed("a.lab.example.org", allowed)
    assert not host_allowed("lab.example.org", allowed)
    assert not host_allowed("lab.example.org.evil.io", allowed)
    assert not host_allowed("bad/host", allowed)
    assert host_allowed("anything:1", ("*",)) and host_allowed("bad/host", ("*",))

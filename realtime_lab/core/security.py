"""Security checks the transport and the hub share: origins, connect tokens, admission.

No sockets here: the upgrade handler calls :func:`handshake_origin_allowed`, the
HTTP server's host guard :func:`host_allowed`; the hub calls
:class:`Admission` and :func:`verify_token` when a connection opens.

Connect tokens are ``<payload>.<signature>``, both base64url without padding:
the payload is JSON ``{"user": ..., "exp": <unix seconds>, ...}`` and the
signature is HMAC-SHA256 of the encoded payload with ``ServerOptions.token_secret``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from realtime_lab.errors import (
    ServerFull,
    TokenExpired,
    TooManyConnectionsFromIP,
    Unauthorized,
)


def origin_allowed(origin: str | None, allowed: Iterable[str] | None, host: str) -> bool:
    """Whether a handshake with header ``Origin: origin`` may proceed.

    ``allowed`` None: same host as the request's ``Host`` header, or no Origin at all
    (non-browser clients do not send one). Otherwise each entry is an exact origin
    (``https://app.example.com``), a wildcard (``https://*.example.com``) or ``"*"``.
    """
    if allowed is None:
        if not origin:
            return True
        return urlsplit(origin.lower()).netloc == host.lower()
    if not origin:
        return "*" in allowed or "null" in allowed
    origin = origin.lower().rstrip("/")
    for pattern in allowed:
        pattern = pattern.lower().rstrip("/")
        if pattern == "*" or pattern == origin:
            return True
        if "*" in pattern and fnmatch.fnmatchcase(origin, pattern):
            return True
    return False


def handshake_origin_allowed(origin: str | None, allowed: Iterable[str] | None, host: str,
                             fetch_site: str | None = None) -> bool:
    """Whether a WebSocket upgrade may proceed, as browsers describe it.

    A same-origin request always may: ``Sec-Fetch-Site`` ``same-origin`` (or
    ``none``, a direct navigation), or, without that header, an ``Origin`` whose
    host and port are the request's ``Host``; so may a request without ``Origin``
    (not a browser). Others are checked with :func:`origin_allowed`. This is
    Tornado 6.6's cross-origin rule, kept the same whatever Tornado is installed;
    a page whose DNS name was re-pointed here is same-origin with itself and is
    refused by its ``Host`` instead (:func:`host_allowed`).
    """
    site = (fetch_site or "").strip().lower()
    if site in ("same-origin", "none"):
        return True
    if not origin:
        return not site  # a browser names its origin when it says cross-site
    if not site and urlsplit(origin.lower()).netloc == host.lower():
        return True
    return origin_allowed(origin, allowed, host)


#: Names that always mean this machine (besides every loopback address).
LOOPBACK_NAMES = frozenset({"localhost"})


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port, brackets or trailing dot
    (``"[::1]:8765"`` -> ``"::1"``); None when the header is not a host."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, sep, port = host.rpartition(":")
        if not sep:
            name = host
        elif not port.isdigit():
            return None
    name = name.rstrip(".")
    if not name or any(c.isspace() or c in "/\\@?#" for c in name):
        return None
    return name


def is_loopback_host(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str | None, allowed: Iterable[str] | None) -> bool:
    """Whether a request with header ``Host: host`` is for this server (DNS rebinding).

    ``allowed`` None: no check. Otherwise loopback names and addresses always
    pass, and each entry is a name (``rt.example.com``), a wildcard
    (``*.example.com``, not matching ``example.com`` itself) or ``"*"`` (any).
    A request without ``Host`` is not from a browser and passes.
    """
    if allowed is None or host is None:
        return True
    name = host_name(host)
    if name is None:
        return "*" in allowed
    if is_loopback_host(name):
        return True
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, user: str, *, ttl: float = 3600.0, now: float | None = None,
               **claims: Any) -> str:
    """A signed connect token for ``user`` valid for ``ttl`` seconds (extra claims kept)."""
    exp = (time.time() if now is None else now) + ttl
    payload = _b64(json.dumps({"user": user, "exp": exp, **claims},
                              separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(sig)}"


def verify_token(secret: str, token: str | None, *, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid token; raise :class:`Unauthorized` or :class:`TokenExpired`."""
    if not token:
        raise Unauthorized("a connect token is required (?token=...)")
    payload, sep, sig = token.partition(".")
    if not sep:
        raise Unauthorized("malformed connect token")
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(sig)
        claims = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("malformed connect token") from None
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("connect token signature does not match")
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int | float):
        raise Unauthorized("connect token has no expiry")
    if claims["exp"] <= (time.time() if now is None else now):
        raise TokenExpired("connect token expired")
    return claims


class Admission:
    """Counts open connections in total and per client IP, against the configured limits."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.owners: dict[str, str] = {}
        self.per_ip: dict[str, int] = {}

    @property
    def total(self) -> int:
        return len(self.owners)

    def check(self, remote: str) -> None:
        """Raise :class:`ServerFull` (4103) or :class:`TooManyConnectionsFromIP` (4104)."""
        if len(self.owners) >= self.max_total:
            raise ServerFull(f"the server has reached max_connections={self.max_total}")
        if self.per_ip.get(remote, 0) >= self.max_per_ip:
            raise TooManyConnectionsFromIP(
                f"{remote} has reached max_connections_per_ip={self.max_per_ip}")

    def add(self, key: str, remote: str) -> None:
        """Count connection ``key`` (a session id) from ``remote``."""
        if key not in self.owners:
            self.owners[key] = remote
            self.per_ip[remote] = self.per_ip.get(remote, 0) + 1

    def remove(self, key: str) -> None:
        """Stop counting ``key`` (idempotent)."""
        remote = self.owners.pop(key, None)
        if remote is None:
            return
        count = self.per_ip.get(remote, 0) - 1
        if count <= 0:
            self.per_ip.pop(remote, None)
        else:
            self.per_ip[remote] = count

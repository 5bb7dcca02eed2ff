"""``GET /metrics``: Prometheus metrics, served only when ``ServerOptions.metrics`` is on.

The metrics come from a prometheus_client registry that server.py builds
(realtime_lab.instrument.prometheus); this handler only checks the bearer token
and encodes the registry in the format the scraper asks for (Prometheus text, or
OpenMetrics with ``Accept: application/openmetrics-text``). Imported only when
metrics are enabled: it imports prometheus_client.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from prometheus_client.exposition import choose_encoder
from tornado.web import RequestHandler


class MetricsHandler(RequestHandler):
    """``GET /metrics``; with a token, only for ``Authorization: Bearer <token>``."""

    def initialize(self, registry: Any, token: str | None = None) -> None:
        self.registry = registry
        self.token = token

    def get(self) -> None:
        if self.token is not None and not bearer_matches(
                self.request.headers.get("Authorization", ""), self.token):
            self.set_status(401)
            self.set_header("WWW-Authenticate", "Bearer")
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps({"error": "unauthorized",
                                    "message": "missing or wrong bearer token"}))
            return
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(encode(self.registry))


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant time)."""
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())

"""Logging: one structured (JSON) line per message in and per broadcast out.

Fields: ``dir`` (in/out), ``conn`` (session id), ``user``, ``type``, ``channel``,
``bytes``, ``recipients`` (out), ``error`` (a refused inbound message), and
``data`` only when ``payloads=True``: payloads are redacted by default
(``"data": "<redacted>"``). ``sample`` (0..1) logs that fraction of messages,
deterministically (every 1/sample-th), so a busy server can keep it on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from realtime_lab.errors import ProtocolError
from realtime_lab.middleware.base import (
    Inbound,
    InboundNext,
    MaybeAwaitable,
    Middleware,
    Outbound,
    OutboundNext,
)

REDACTED = "<redacted>"


class Logging(Middleware):
    """Structured log lines for the inbound and outbound paths.

    Args:
        logger: a logger or its name (default ``realtime_lab.middleware``).
        level: level of the lines (INFO); nothing is built when it is disabled.
        sample: fraction of messages logged (1.0 = all).
        payloads: include message data (False: redacted).
        inbound_log: log the inbound path (client to server).
        outbound_log: log the outbound path (server to client).
    """

    def __init__(self, logger: logging.Logger | str = "realtime_lab.middleware", *,
                 level: int = logging.INFO, sample: float = 1.0, payloads: bool = False,
                 inbound_log: bool = True, outbound_log: bool = True) -> None:
        if not 0 < sample <= 1:
            raise ValueError("sample must be in (0, 1]")
        self.log = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.sample = sample
        self.payloads = payloads
        self.lines = 0
        self._acc = 0.0
        if not inbound_log:
            self.inbound = Middleware.inbound.__get__(self)  # type: ignore[method-assign]
        if not outbound_log:
            self.outbound = Middleware.outbound.__get__(self)  # type: ignore[method-assign]

    def _sampled(self) -> bool:
        if not self.log.isEnabledFor(self.level):
            return False
        self._acc += self.sample
        if self._acc >= 1.0:
            self._acc -= 1.0
            return True
        return False

    def _emit(self, fields: dict[str, Any]) -> None:
        self.lines += 1
        self.log.log(self.level, json.dumps(fields, default=str, separators=(",", ":")))

    def inbound(self, ctx: Inbound, call_next: InboundNext) -> MaybeAwaitable[None]:
        if not self._sampled():
            return call_next(ctx)
        session = ctx.session
        fields: dict[str, Any] = {"dir": "in", "conn": session.id, "user": session.user,
                                  "type": ctx.type, "channel": ctx.channel, "bytes": ctx.size}
        msg = ctx.message
        if isinstance(msg, dict) and "data" in msg:
            fields["data"] = msg["data"] if self.payloads else REDACTED
        try:
            result = call_next(ctx)
        except ProtocolError as err:
            fields["error"] = err.code
            self._emit(fields)
            raise
        self._emit(fields)
        return result

    def outbound(self, ctx: Outbound, call_next: OutboundNext) -> int:
        if not self._sampled():
            return int(call_next(ctx))
        delivered = int(call_next(ctx))
        fields: dict[str, Any] = {"dir": "out", "user": ctx.sender, "type": "message",
                                  "channel": ctx.channel, "bytes": ctx.size,
                                  "recipients": delivered}
        fields["data"] = ctx.message.get("data") if self.payloads else REDACTED
        self._emit(fields)
        return delivered

    def __repr__(self) -> str:
        return f"Logging({self.log.name!r}, sample={self.sample}, payloads={self.payloads})"

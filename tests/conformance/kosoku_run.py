"""Run kosoku (Autobahn cases) with a fix for its 12.x/13.x compression cases.

kosoku 0.1.0 hands the vendored Python 2 cases of groups 12 and 13 each echoed
message as ``str`` (binary ones one character per byte, text ones decoded), and
those cases feed it to ``hashlib.sha1`` as Python 2 did with bytes, so every
case ends in ``ERROR: Strings must be encoded before hashing`` whatever the
server does. This wrapper turns the message back into the bytes that were
received before the case sees it, then runs kosoku's own command line:

    python tests/conformance/kosoku_run.py ws://127.0.0.1:PORT/echo -i 12.1.1 -o DIR
"""

from __future__ import annotations

import importlib
from typing import Any


def _as_bytes(on_message: Any) -> Any:
    def on_message_bytes(self: Any, msg: Any, binary: bool) -> Any:
        if isinstance(msg, str):
            msg = msg.encode("latin-1" if binary else "utf-8")
        return on_message(self, msg, binary)

    return on_message_bytes


def patch_compression_cases() -> None:
    """Make the 12.x/13.x cases hash the bytes they received."""
    from kosoku._caseindex import initialize_shims

    initialize_shims()
    module = importlib.import_module("case12_x_x")
    for group in ("Case12_X_X", "Case13_X_X"):
        for cls in getattr(module, group):
            if not getattr(cls, "_bytes_patch", False):
                cls.onMessage = _as_bytes(cls.onMessage)
                cls._bytes_patch = True


def main() -> None:
    patch_compression_cases()
    from kosoku._cli import main as kosoku_main

    kosoku_main()


if __name__ == "__main__":
    main()

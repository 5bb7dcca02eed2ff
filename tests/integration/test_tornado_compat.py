"""The Tornado internals the transport relies on: an upgrade that changes them fails here.

realtime_lab/transports/ws_protocol.py, frame_reader.py, slim.py and tornado_ws.py override or read
private parts of Tornado (see docs/deploy.md, "Supported Tornado versions").
Private names can change in any minor release, so pyproject.toml pins a range of
minors that pass the suite, and these tests name what changed when a Tornado
version outside that range, or one that broke an internal, is installed.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import inspect
import socket
import tomllib
from pathlib import Path
from typing import Any

import tornado
import tornado.util
import tornado.web
import tornado.websocket
from packaging.requirements import Requirement
from packaging.version import Version
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.iostream import IOStream
from tornado.websocket import WebSocketHandler, WebSocketProtocol13

from realtime_lab.protocol.deflate import as_policy
from realtime_lab.transports import frame_reader, slim, tornado_ws, ws_protocol
from realtime_lab.transports.tornado_ws import HubWebSocketHandler
from realtime_lab.transports.ws_protocol import PROTOCOL_ATTRIBUTES, LabWebSocketProtocol

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# WebSocketProtocol13 methods our protocol calls or overrides, and who needs them.
PROTOCOL13_METHODS = {
    "_accept_connection": "runs the handshake that calls our overrides (ws_protocol.py)",
    "_parse_extensions_header": "overridden: permessage-deflate negotiation (ws_protocol.py)",
    "_create_compressors": "overridden: our Inflater instead of Tornado's (ws_protocol.py)",
    "_receive_frame_loop": "overridden: the callback-stepped reader (frame_reader.py)",
    "_receive_frame": "overridden (frame_reader.py)",
    "_read_bytes": "called by the reader (frame_reader.py)",
    "_abort": "called by the reader on errors (frame_reader.py)",
    "_run_callback": "delivers on_message/on_ping/on_pong (frame_reader.py)",
    "_write_frame": "the writer we keep (pongs on Tornado < 6.6, close frames)",
    "close": "the closing handshake we keep (ws_protocol.py)",
    "is_closing": "used by EchoHandler and TornadoPort.ping",
}
# What _accept_connection must still call by name, or our override is dead code.
ACCEPT_CALLS = ("_parse_extensions_header", "_create_compressors", "_receive_frame_loop",
                "_detach_stream")
# Handler attributes slim.release_http_state resets, and where Tornado sets them.
HANDLER_HTTP_STATE = {
    "ui": tornado.web, "_headers": tornado.web, "_write_buffer": tornado.web,
    "_transforms": tornado.web, "path_args": tornado.web, "path_kwargs": tornado.web,
    "open_args": tornado.websocket, "open_kwargs": tornado.websocket,
}


def _declared_tornado() -> Requirement:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "tornado"]
    assert len(reqs) == 1, f"pyproject.toml should declare tornado once, found {deps}"
    return reqs[0]


def test_installed_tornado_is_in_the_declared_range() -> None:
    req = _declared_tornado()
    assert req.specifier, "pyproject.toml must bound tornado (private internals are used)"
    upper = [s for s in req.specifier if s.operator in ("<", "<=", "~=", "==")]
    assert upper, f"tornado requirement {req} has no upper bound; add one below the next minor"
    assert Version(tornado.version) in req.specifier, (
        f"Tornado {tornado.version} is installed but pyproject.toml declares {req}: "
        "run the transport tests on it and update the range (docs/deploy.md)")


def test_websocket_protocol13_private_methods_exist() -> None:
    missing = [f"{name} ({why})" for name, why in PROTOCOL13_METHODS.items()
               if not callable(getattr(WebSocketProtocol13, name, None))]
    assert not missing, (f"Tornado {tornado.version}: WebSocketProtocol13 lost "
                         + "; ".join(missing))
    signature = inspect.signature(WebSocketProtocol13._create_compressors)
    assert list(signature.parameters)[:4] == [
        "self", "side", "agreed_parameters", "compression_options"], (
        f"Tornado {tornado.version}: _create_compressors{signature} changed; "
        "LabWebSocketProtocol overrides it with (side, agreed_parameters, compression_options)")
    assert list(inspect.signature(WebSocketProtocol13._parse_extensions_header).parameters) == [
        "self", "headers"], f"Tornado {tornado.version}: _parse_extensions_header changed"


def test_accept_connection_still_calls_our_overrides() -> None:
    source = inspect.getsource(WebSocketProtocol13._accept_connection)
    gone = [name for name in ACCEPT_CALLS if name not in source]
    assert not gone, (f"Tornado {tornado.version}: WebSocketProtocol13._accept_connection "
                      f"no longer calls {gone}; our overrides of them would never run")
    handler_methods = ("_detach_stream", "detach", "on_ws_connection_close", "log_exception",
                       "get_websocket_protocol")
    lost = [name for name in handler_methods if not hasattr(WebSocketHandler, name)]
    assert not lost, f"Tornado {tornado.version}: WebSocketHandler lost {lost}"


def _self_calls(module: Any, class_name: str) -> set[str]:
    """Names of every ``self.NAME(...)`` call in ``class_name``'s methods."""
    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {node.func.attr for node in ast.walk(cls)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"}


def test_every_method_our_classes_call_on_self_exists() -> None:
    """E.g. ``_send_pong`` (Tornado 6.6 only; frame_reader.py defines it for older ones).

    LabWebSocketProtocol's reader methods live in its FrameReaderMixin
    (frame_reader.py): their calls are looked up on LabWebSocketProtocol too.
    """
    assert issubclass(LabWebSocketProtocol, frame_reader.FrameReaderMixin)
    for module, class_name, cls in (
            (ws_protocol, "LabWebSocketProtocol", LabWebSocketProtocol),
            (frame_reader, "FrameReaderMixin", LabWebSocketProtocol),
            (tornado_ws, "HubWebSocketHandler", HubWebSocketHandler)):
        gone = sorted(n for n in _self_calls(module, class_name) if not hasattr(cls, n))
        assert not gone, (f"Tornado {tornado.version}: {class_name} calls {gone} on self, "
                          f"which neither {cls.__name__} nor Tornado defines ({module.__name__})")


def test_websocket_mask_and_params() -> None:
    mask = getattr(tornado.util, "_websocket_mask", None)
    assert mask is not None, (f"Tornado {tornado.version}: tornado.util._websocket_mask is gone "
                              "(frame_reader.py unmasks frames with it)")
    assert mask(b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05") == b"\x00\x00\x00\x00\x04"
    params_cls = getattr(tornado.websocket, "_WebSocketParams", None)
    assert params_cls is not None, f"Tornado {tornado.version}: websocket._WebSocketParams is gone"
    params = params_cls(ping_interval=1.0, ping_timeout=2.0, max_message_size=3,
                        compression_options={})
    got = (params.ping_interval, params.ping_timeout, params.max_message_size,
           params.compression_options)
    assert got == (1.0, 2.0, 3, {}), f"Tornado {tornado.version}: _WebSocketParams changed"


class _Handler:
    """Just enough of a handler for the protocols' constructors."""

    ping_interval = ping_timeout = None


def test_our_init_sets_everything_tornado_init_sets() -> None:
    """LabWebSocketProtocol.__init__ replaces WebSocketProtocol13.__init__ (memory).

    Every attribute Tornado's constructor gives an instance must exist on ours:
    set by our __init__ or a class default (the replaced reader's state).
    """
    params = tornado.websocket._WebSocketParams(compression_options={})
    theirs = WebSocketProtocol13(_Handler(), mask_outgoing=False,  # type: ignore[arg-type]
                                 params=params)
    ours = LabWebSocketProtocol(_Handler(), params, as_policy(True))
    missing = sorted(name for name in vars(theirs) if not hasattr(ours, name))
    assert not missing, (f"Tornado {tornado.version}: WebSocketProtocol13.__init__ sets "
                         f"{missing}, which LabWebSocketProtocol.__init__ does not "
                         "(ws_protocol.py; add them there and to PROTOCOL_ATTRIBUTES)")
    extra = sorted(set(vars(ours)) - set(PROTOCOL_ATTRIBUTES))
    assert not extra, f"attributes not primed in PROTOCOL_ATTRIBUTES: {extra}"


def test_handler_http_state_names_still_exist() -> None:
    """slim.release_http_state resets these; a renamed one would silently stay alive."""
    assert set(HANDLER_HTTP_STATE) == set(slim._HANDLER_HTTP_STATE)
    gone = [f"{name} ({module.__name__})" for name, module in HANDLER_HTTP_STATE.items()
            if f"self.{name} =" not in inspect.getsource(module)]
    assert not gone, (f"Tornado {tornado.version} no longer sets handler attributes {gone} "
                      "(slim.py releases them after open)")
    request = HTTPServerRequest(start_line=RequestStartLine("GET", "/ws", "HTTP/1.1"),
                                headers=HTTPHeaders({"Host": "127.0.0.1"}))
    lost = [n for n in ("headers", "connection", "server_connection") if not hasattr(request, n)]
    assert not lost, f"Tornado {tornado.version}: HTTPServerRequest lost {lost} (slim.py)"


async def test_iostream_private_buffers() -> None:
    """IOStream._write_buffer (len, _buffers deque) and _write_futures (a deque)."""
    a, b = socket.socketpair()
    stream = IOStream(a)
    try:
        buffer: Any = getattr(stream, "_write_buffer", None)
        assert buffer is not None, (f"Tornado {tornado.version}: IOStream._write_buffer is gone "
                                    "(slim.py replaces its deque)")
        assert len(buffer) == 0, f"Tornado {tornado.version}: _write_buffer has no len()"
        assert type(getattr(buffer, "_buffers", None)) is collections.deque, (
            f"Tornado {tornado.version}: IOStream._write_buffer._buffers is no deque "
            "(slim.slim_stream replaces it)")
        assert type(getattr(stream, "_write_futures", None)) is collections.deque, (
            f"Tornado {tornado.version}: IOStream._write_futures is no deque (slim.py)")
        assert stream.socket is a, f"Tornado {tornado.version}: IOStream.socket changed"
        # The slimmed stream still writes, in order, and reports its backlog.
        slim.slim_stream(stream)
        assert isinstance(stream._write_futures, slim.ListDeque)
        await asyncio.wait_for(stream.write(b"one "), 5)
        await asyncio.wait_for(stream.write(b"two"), 5)
        b.settimeout(5)
        got = b""
        while len(got) < 7:
            got += b.recv(64)
        assert got == b"one two"
        assert len(stream._write_buffer) == 0
    finally:
        stream.close()
        b.close()

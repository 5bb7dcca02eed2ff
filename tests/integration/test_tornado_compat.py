"""Tornado compatibility: the declared range, and no private name of Tornado or asyncio.

realtime_lab uses only public APIs of the libraries it builds on (docs/deploy.md,
"Supported Tornado versions"), which is what lets pyproject.toml accept every
Tornado release from 6.4 on. These tests keep it so: the installed Tornado is in
the declared range, no module of realtime_lab reads or writes a private name
(``_something``) of Tornado or asyncio, and the public methods the transport
relies on exist with the signatures it calls them with.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import tornado
import tornado.iostream
import tornado.web
from packaging.requirements import Requirement
from packaging.version import Version

import realtime_lab

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = Path(realtime_lab.__file__).resolve().parent
_PRIVATE = re.compile(r"\b(_[A-Za-z][A-Za-z0-9_]*)\b")
#: Names that appear in Tornado's or asyncio's source but that realtime_lab uses on
#: other objects, where they are public.
NOT_THEIRS = {
    "_replace": "namedtuple._replace, documented (urllib.parse results in broker/)",
    "_Decompress": "zlib's decompressor type, in an annotation (protocol/deflate.py)",
}


def _declared_tornado() -> Requirement:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "tornado"]
    assert len(reqs) == 1, f"pyproject.toml should declare tornado once, found {deps}"
    return reqs[0]


def test_installed_tornado_is_in_the_declared_range() -> None:
    req = _declared_tornado()
    assert Version(tornado.version) in req.specifier, (
        f"Tornado {tornado.version} is installed but pyproject.toml declares {req}: "
        "run the suite on it and update the range (docs/deploy.md)")
    assert Version("6.4") in req.specifier, "6.4 is the oldest release the suite runs on"


def _private_names(*packages: object) -> set[str]:
    """Every ``_name`` (not dunder) that appears in the source of ``packages``."""
    names: set[str] = set()
    for package in packages:
        root = Path(package.__file__).resolve().parent  # type: ignore[attr-defined]
        for path in root.rglob("*.py"):
            names |= {n for n in _PRIVATE.findall(path.read_text(errors="replace"))
                      if not n.endswith("__")}
    return names


def _own_names(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: functions, classes, variables, attributes
    it sets on ``self`` or ``cls``, ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and _root_name(node.value) in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names |= {c.value for c in ast.walk(node.value)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return names


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(source: str, foreign: set[str], own: set[str]) -> Iterator[tuple[int, str]]:
    """(line, name) of each use of a private name of Tornado or asyncio in ``source``.

    Flagged: ``x._name`` (``x`` not ``self``/``cls``) and ``getattr(x, "_name")`` and
    friends, when ``_name`` is private in Tornado or asyncio and not one of
    realtime_lab's own names; ``tornado.x._name`` / ``asyncio._name`` always; and
    ``from tornado... import _name``.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "tornado", "asyncio"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.endswith("__"):
            root = _root_name(node.value)
            theirs = root in ("tornado", "asyncio")
            if theirs or (root not in ("self", "cls") and node.attr in foreign - own):
                yield node.lineno, node.attr
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            name = node.args[1].value
            if isinstance(name, str) and name in foreign - own:
                yield node.lineno, name


def test_no_private_name_of_tornado_or_asyncio_is_used() -> None:
    foreign = _private_names(tornado, asyncio) - set(NOT_THEIRS)
    trees = {path: ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}
    own: set[str] = set()
    for tree in trees.values():
        own |= _own_names(tree)
    found = [f"{path.relative_to(ROOT)}:{line}: {name}"
             for path in sorted(trees) for line, name in
             private_uses(path.read_text(), foreign, own)]
    assert not found, "private names of Tornado or asyncio used:\n" + "\n".join(found)


def test_the_private_name_check_finds_what_the_old_transport_did() -> None:
    """The check above would have caught each private use of the replaced transport."""
    foreign = _private_names(tornado, asyncio)
    old = '''
from tornado.util import _websocket_mask
from tornado.websocket import _WebSocketParams
def f(stream, waiting, proto, buffer):
    waiting._asyncio_future_blocking = False
    if not stream._write_buffer:
        stream._write_futures = []
    proto._compressor._compressor = None
    getattr(stream, "_write_buffer", None)
    tornado.util._websocket_mask(b"", b"")
    return self._ok
'''
    names = {name for _, name in private_uses(old, foreign, set())}
    assert names == {"_websocket_mask", "_WebSocketParams", "_asyncio_future_blocking",
                     "_write_buffer", "_write_futures", "_compressor"}


def test_the_public_apis_the_transport_calls() -> None:
    """tornado_ws.py and pump.py call these, with these arguments."""
    from tornado.iostream import IOStream, SSLIOStream
    from tornado.web import Application, RequestHandler

    assert list(inspect.signature(RequestHandler.detach).parameters) == ["self"]
    assert list(inspect.signature(Application.log_request).parameters) == ["self", "handler"]
    read = inspect.signature(IOStream.read_bytes).parameters
    assert list(read)[:3] == ["self", "num_bytes", "partial"]
    for name in ("fileno", "close", "closed", "write", "set_close_callback"):
        assert callable(getattr(IOStream, name, None)), f"IOStream.{name}"
    assert issubclass(SSLIOStream, IOStream)
    assert callable(getattr(asyncio.AbstractEventLoop, "add_reader", None))

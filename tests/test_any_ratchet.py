"""The `Any` ratchet (issue 14, decision 14): `Any` in core/ and protocol/ may only go down.

Counts every use of `typing.Any` in the code of ``realtime_lab/core`` and
``realtime_lab/protocol``: names and attributes (``Any``, ``typing.Any``) in the
syntax tree, including those inside quoted annotations and type aliases (a string
that parses as an expression); the import itself counts too. Comments and docstrings
do not. The counts are stored below: a change that adds an `Any` fails here (type it:
``object``, a ``Protocol``, a ``TypeVar``); a change that removes some fails too,
until it lowers the stored count, so the ratchet never slips back.
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "realtime_lab"

#: package -> uses of `Any` in it. Lower these as the count goes down; never raise them.
ALLOWED = {"core": 77, "protocol": 52}


def _is_docstring(parents: dict[ast.AST, ast.AST], node: ast.Constant) -> bool:
    expr = parents.get(node)
    if not isinstance(expr, ast.Expr):
        return False
    owner = parents.get(expr)
    body = getattr(owner, "body", None)
    return isinstance(body, list) and bool(body) and body[0] is expr


def _names(tree: ast.AST) -> int:
    return sum(1 for n in ast.walk(tree)
               if isinstance(n, ast.Name) and n.id == "Any"
               or isinstance(n, ast.Attribute) and n.attr == "Any"
               or isinstance(n, ast.alias) and (n.asname or n.name) == "Any")


def any_uses(source: str) -> int:
    """Uses of `Any` in one module's source (see the module docstring)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    count = _names(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and "Any" in node.value and not _is_docstring(parents, node)):
            with contextlib.suppress(SyntaxError):  # prose, not a type
                count += _names(ast.parse(node.value.strip(), mode="eval"))
    return count


def counts(package: str) -> dict[str, int]:
    """``{module path: uses}`` for every module of ``realtime_lab/<package>`` that has some."""
    out: dict[str, int] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        n = any_uses(path.read_text(encoding="utf-8"))
        if n:
            out[str(path.relative_to(ROOT.parent))] = n
    return out


def test_the_counter_sees_annotations_aliases_and_imports_not_prose() -> None:
    source = '''
"""Any docstring mentioning Any is prose."""
from typing import Any
import typing
Alias = "dict[str, Any]"
def f(x: Any, y: "list[Any]") -> typing.Any:  # Any in a comment
    """Any."""
    return "Any prose here, Any."
'''
    assert any_uses(source) == 5  # the import, the alias, x, y, typing.Any


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_any_only_goes_down(package: str) -> None:
    found = counts(package)
    total = sum(found.values())
    detail = ", ".join(f"{path} {n}" for path, n in found.items())
    assert total <= ALLOWED[package], (
        f"realtime_lab/{package} uses Any {total} times, more than the {ALLOWED[package]} "
        f"allowed: type the new code without Any (object, a Protocol, a TypeVar). "
        f"Per module: {detail}")
    assert total == ALLOWED[package], (
        f"realtime_lab/{package} uses Any {total} times now: lower ALLOWED[{package!r}] in "
        f"tests/test_any_ratchet.py from {ALLOWED[package]} to {total}")

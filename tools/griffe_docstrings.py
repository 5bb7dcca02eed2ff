"""A Griffe extension for the API reference: the docstrings' own conventions as Markdown.

realtime_lab's docstrings are Google style, with two habits that Markdown does not know:

* Sphinx roles (``:class:`~realtime_lab.core.authz.ChannelRule` ``): shown as code,
  the last dotted name when the target starts with ``~``, as Sphinx would;
* titled groups of fields after the standard sections (``Security (docs/security.md):``
  followed by indented ``name: text`` items, as in ``ServerOptions``): shown as a bold
  title and a list, instead of one run-on paragraph.

The source is not changed; only what mkdocstrings renders.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
GOOGLE_SECTIONS = {
    "args", "arguments", "params", "parameters", "keyword args", "keyword arguments",
    "other args", "other arguments", "other params", "other parameters", "raises",
    "exceptions", "returns", "return", "yields", "yield", "receives", "receive",
    "examples", "example", "attributes", "functions", "methods", "classes", "modules",
    "warns", "warnings", "warning", "note", "notes", "see also", "todo", "deprecated",
}
GROUP_TITLE = re.compile(r"^(\S[^:]*):\s*$")
ITEM = re.compile(r"^    (\w+(?:, \w+)*): (.*)$")


def _role(m: re.Match[str]) -> str:
    target = m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if m.group(1) else target}`"


def tidy(text: str) -> str:
    """A docstring with its roles as code and its titled field groups as lists."""
    text = ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        title = GROUP_TITLE.match(lines[i])
        if (title and title.group(1).lower() not in GOOGLE_SECTIONS and i + 1 < len(lines)
                and ITEM.match(lines[i + 1])):
            out += [f"**{title.group(1)}**", ""]
            i += 1
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                item = ITEM.match(lines[i])
                if item:
                    names = ", ".join(f"`{n}`" for n in item.group(1).split(", "))
                    out.append(f"- {names}: {item.group(2)}")
                elif lines[i].strip():
                    out.append("  " + lines[i].strip())
                else:
                    break
                i += 1
            out.append("")
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


class SiteDocstrings(griffe.Extension):
    """Apply `tidy` to every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = tidy(obj.docstring.value)

"""The how-to guides' Python code runs as written (docs/howto/*.md).

A guide's ```python blocks are one session, in order, as a reader runs them in
notebook cells: they are joined into the body of one coroutine (top-level ``await``
allowed) and run in a fresh interpreter, which must exit 0 within the timeout. A
block whose first line is ``# not run: REASON`` is left out (a fragment of a larger
application, a browser page...).

The Spanish guides (docs/es/howto/) carry the same code blocks byte for byte, with
their prose translated; they are not run a second time: a test checks that each one
makes exactly the script its English guide makes, which the run above covers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "docs" / "howto"
ES_HOWTO = ROOT / "docs" / "es" / "howto"
pytestmark = pytest.mark.timeout(300)
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    blocks = [textwrap.dedent(m.group(2)) for m in BLOCK.finditer(page.read_text())]
    return [b for b in blocks if not b.startswith("# not run:")]


def as_script(blocks: list[str]) -> str:
    body = textwrap.indent("\n".join(blocks), "    ")
    return f"import asyncio\n\n\nasync def main():\n{body}\n\n\nasyncio.run(main())\n"


PAGES = sorted(p.name for p in HOWTO.glob("*.md") if python_blocks(p))
# The first line of a Spanish guide names its original (tests/docs/test_translations.py).
ORIGINAL = re.compile(r"^> Traducción de \[docs/howto/([\w.-]+)\]")


def spanish_guides() -> dict[str, str]:
    """English guide -> its Spanish translation (file names)."""
    out: dict[str, str] = {}
    for page in sorted(ES_HOWTO.glob("*.md")):
        m = ORIGINAL.match(page.read_text().split("\n", 1)[0])
        assert m, f"docs/es/howto/{page.name}: its first line must name its English original"
        out[m.group(1)] = page.name
    return out


def test_guides_with_code_are_found() -> None:
    assert len(PAGES) >= 4, PAGES


@pytest.mark.parametrize("page", PAGES)
def test_howto_code_runs(page: str, tmp_path: Path) -> None:
    blocks = python_blocks(HOWTO / page)
    script = tmp_path / "howto.py"
    script.write_text(as_script(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, (
        f"docs/howto/{page}: its code failed:\n{script.read_text()}\n{done.stdout}\n{done.stderr}"
    )


def test_every_guide_has_a_spanish_version() -> None:
    missing = sorted(p.name for p in HOWTO.glob("*.md") if p.name not in spanish_guides())
    assert not missing, f"docs/howto/ pages without a translation in docs/es/howto/: {missing}"


@pytest.mark.parametrize("page", sorted(spanish_guides()))
def test_spanish_guide_runs_the_english_code(page: str) -> None:
    """Same script as the English guide's, so test_howto_code_runs covers it."""
    spanish = ES_HOWTO / spanish_guides()[page]
    assert as_script(python_blocks(spanish)) == as_script(python_blocks(HOWTO / page)), (
        f"docs/es/howto/{spanish.name} does not run the code of docs/howto/{page}"
    )

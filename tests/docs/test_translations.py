"""The Spanish pages in docs/es/ against their English originals.

Each translated page (in docs/es/ or its folders howto/ and api/) must open with a
link to its English original and the commit it translates, keep every fenced code
block byte for byte, keep every inline code span (option names, wire fields, error
codes), have as many sections, and every relative link in docs/es/ must resolve to a
file (and to a heading, for an anchor).
When an English page changes, update its translation and the commit in its header.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ES = DOCS / "es"

# Spanish page -> English original.
PAIRS = {
    "canales.md": "channels.md",
    "presencia.md": "presence.md",
    "cliente.md": "client.md",
    "escalado.md": "scaling.md",
    "middleware.md": "middleware.md",
    "eventos.md": "events.md",
    "compresion.md": "compression.md",
    "protocolo-binario.md": "protocol-binary.md",
    "widgets.md": "widgets.md",
    "metricas.md": "metrics.md",
    "seguridad.md": "security.md",
    "despliegue.md": "deploy.md",
    "referencia.md": "reference.md",
    "howto/cuaderno.md": "howto/notebook.md",
    "howto/canales-privados.md": "howto/private-channels.md",
    "howto/navegador.md": "howto/browser.md",
    "howto/medir-difusion.md": "howto/measure-broadcast.md",
    "howto/aula.md": "howto/classroom.md",
    # the API reference: a Spanish introduction, the same mkdocstrings directives
    "api/broker.md": "api/broker.md",
    "api/client.md": "api/client.md",
    "api/core.md": "api/core.md",
    "api/errors.md": "api/errors.md",
    "api/index.md": "api/index.md",
    "api/inspection.md": "api/inspection.md",
    "api/instrument.md": "api/instrument.md",
    "api/middleware.md": "api/middleware.md",
    "api/plot.md": "api/plot.md",
    "api/protocol.md": "api/protocol.md",
    "api/realtime_lab.md": "api/realtime_lab.md",
    "api/testing.md": "api/testing.md",
    "api/transports.md": "api/transports.md",
    "api/pusher.md": "api/pusher.md",
    "api/widgets.md": "api/widgets.md",
    "protocolo.md": "protocol.md",
    "pusher.md": "pusher.md",
    "quickstart.md": "tutorial-quickstart.md",
    "index.md": "index.md",
    "rendimiento.md": "performance.md",
    "http2.md": "http2.md",
    "arquitectura.md": "architecture.md",
}

FENCE = re.compile(r"^\s*(```+|~~~+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# "../X.md" from docs/es/, "../../howto/X.md" from docs/es/howto/
HEADER = re.compile(
    r"^> Traducción de \[docs/([\w./-]+)\]\(((?:\.\./)+)([\w./-]+)\) en `([0-9a-f]{7,40})`\."
)


def code_blocks(text: str) -> list[str]:
    """Fenced code blocks, fences and indentation included, in order."""
    blocks: list[str] = []
    cur: list[str] | None = None
    fence = ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if cur is None and m:
            cur, fence = [line], m.group(1)
        elif cur is not None:
            cur.append(line)
            if line.strip() == fence:
                blocks.append("\n".join(cur))
                cur = None
    assert cur is None, "unclosed code fence"
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    out: list[str] = []
    inside, fence = False, ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if not inside and m:
            inside, fence = True, m.group(1)
        elif inside and line.strip() == fence:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def inline_code(text: str) -> set[str]:
    """Inline code spans (they may wrap over lines), whitespace collapsed."""
    return {" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose(text))}


def headings(text: str) -> list[str]:
    return [line for line in prose(text).splitlines() if re.match(r"^#{1,6} ", line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    title = heading.lstrip("#").strip().lower()
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for h in headings(text):
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    out.update(re.findall(r'<a id="([^"]+)"></a>', prose(text)))  # explicit HTML anchors
    return out


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_header_links_the_original_and_names_a_commit(es: str, en: str) -> None:
    first = (ES / es).read_text().splitlines()[0]
    m = HEADER.match(first)
    up = "../" * (es.count("/") + 1)
    expected = f"> Traducción de [docs/{en}]({up}{en}) en `<commit>`."
    assert m, f"docs/es/{es}: the first line must be '{expected}'"
    assert m.group(1) == en and m.group(2) == up and m.group(3) == en, (
        f"docs/es/{es} must name docs/{en}: '{expected}'")
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        shallow = subprocess.run(
            [git, "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        if shallow == "false":
            # in HEAD's history, not just in the object store: a hash left behind by a
            # rebase still exists locally but not in a fresh clone
            found = subprocess.run(
                [git, "merge-base", "--is-ancestor", m.group(4), "HEAD"], cwd=ROOT,
                capture_output=True,
            )
            assert found.returncode == 0, (
                f"docs/es/{es}: commit {m.group(4)} is not in this branch's history"
                " (rebased? name the commit that last changed the English page)")


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_code_blocks_are_identical(es: str, en: str) -> None:
    en_blocks = code_blocks((DOCS / en).read_text())
    es_blocks = code_blocks((ES / es).read_text())
    assert len(es_blocks) == len(en_blocks), (
        f"docs/es/{es} has {len(es_blocks)} code blocks, docs/{en} has {len(en_blocks)}: "
        "update the translation and the commit in its header"
    )
    for i, (a, b) in enumerate(zip(en_blocks, es_blocks, strict=True)):
        assert a == b, f"code block {i} of docs/es/{es} differs from docs/{en}:\n{a}\n---\n{b}"


def directives(text: str) -> list[str]:
    """mkdocstrings' ``::: module`` blocks (with their indented options), in order."""
    return re.findall(r"^::: .*\n(?:(?: {4}.*)?\n)*", text + "\n", re.M)


@pytest.mark.parametrize("es,en", sorted(p for p in PAIRS.items() if p[0].startswith("api/")))
def test_api_pages_render_the_same_reference(es: str, en: str) -> None:
    """The Spanish API pages show the English docstrings, with the same options."""
    en_directives = [d.strip() for d in directives((DOCS / en).read_text())]
    assert [d.strip() for d in directives((ES / es).read_text())] == en_directives, (
        f"docs/es/{es}: its ::: blocks must be those of docs/{en}"
    )


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_inline_code_is_kept(es: str, en: str) -> None:
    missing = inline_code((DOCS / en).read_text()) - inline_code((ES / es).read_text())
    assert not missing, f"docs/es/{es} lacks these code spans of docs/{en}: {sorted(missing)}"


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_same_sections(es: str, en: str) -> None:
    def levels(text: str) -> list[int]:
        return [len(h) - len(h.lstrip("#")) for h in headings(text)]

    assert levels((ES / es).read_text()) == levels((DOCS / en).read_text()), (
        f"docs/es/{es} and docs/{en} have different sections"
    )


SPANISH_PAGES = sorted(p.relative_to(ES).as_posix() for p in ES.rglob("*.md"))


def test_every_spanish_page_is_paired() -> None:
    """A page of docs/es/ without a pair here would escape the checks above."""
    unpaired = set(SPANISH_PAGES) - set(PAIRS)
    assert not unpaired, f"add these to PAIRS with their English originals: {sorted(unpaired)}"


@pytest.mark.parametrize("page", SPANISH_PAGES)
def test_relative_links_resolve(page: str) -> None:
    path = ES / page
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"docs/es/{page}: broken link {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest.read_text()), f"docs/es/{page}: no heading for {target}"


def test_every_spanish_page_is_linked_from_both_indexes() -> None:
    """The module pages of the API reference (api/*.md) are linked from its own index,
    docs/es/api/index.md, as the English ones are from docs/api/index.md."""
    es_index = (ES / "index.md").read_text()
    en_index = (DOCS / "index.md").read_text()
    api_index = (ES / "api" / "index.md").read_text() if (ES / "api" / "index.md").exists() else ""
    for page in SPANISH_PAGES:
        if page == "index.md":
            continue
        if page.startswith("api/") and page != "api/index.md":
            assert f"]({page.removeprefix('api/')})" in api_index, (
                f"docs/es/api/index.md does not link {page}")
            continue
        assert f"]({page})" in es_index, f"docs/es/index.md does not link {page}"
        assert f"](es/{page})" in en_index, f"docs/index.md does not link es/{page}"

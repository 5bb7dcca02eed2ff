"""MkDocs hooks of the realtime_lab site (mkdocs.yml and mkdocs.es.yml).

The Markdown under docs/ is written to be read on GitHub too, so the pages stay where
they are and these hooks adapt them to the site:

* the lesson notebooks (notebooks/*.ipynb) and their index (notebooks/README.md) are
  added to the English site under notebooks/, and their Spanish translations
  (notebooks/es/, each naming its English original in its first line, see
  tests/docs/test_notebook_translations.py) to the Spanish site under notebooks/, in
  the English lessons' places of its navigation; mkdocs-jupyter renders them from their
  stored outputs (they are never executed here), and relative links in their Markdown
  cells are rewritten like those of the pages;
* a relative link that leaves the site's docs_dir is rewritten: to a page of the site
  when it points at a file the site has (a lesson, docs/img/...), to the other
  language's site when it points into docs/es/ (or out of it), and to the file on the
  repository otherwise. A link to a file that does not exist, or to a heading that does
  not exist in the other language's page, is a warning, so `mkdocs build --strict`
  fails on it;
* the Spanish site's navigation is the English one with each translated page (its first
  line names its English original, see tests/docs/test_translations.py) in its English
  page's place, and a short page linking the English one for each untranslated page;
* headings get GitHub's anchors (the pages' own links use them).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pymdownx.slugs import slugify

log = logging.getLogger("mkdocs.hooks.realtime_lab")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ES = DOCS / "es"
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOKS_ES = NOTEBOOKS / "es"
BRANCH = "main"

# The first line of a translated page: "> Traducción de [docs/X.md](../X.md) en `abc1234`."
# (a page in a folder of docs/es/, e.g. howto/ or api/, links its original one level up more)
TRANSLATION_HEADER = re.compile(r"^> Traducción de \[docs/([\w./-]+)\]\(")
# The first line of a translated lesson (a Markdown cell) or of the lessons' index:
# "> Traducción de [notebooks/X.ipynb](../X.ipynb) en `abc1234`."
LESSON_HEADER = re.compile(r"^> Traducción de \[(notebooks/[\w.-]+)\]\(")

# Navigation titles of the Spanish site (keys: the English titles in mkdocs.yml).
TITLES_ES = {
    "Home": "Inicio",
    "Tutorials": "Tutoriales",
    "Quickstart": "Guía rápida",
    "Lessons": "Lecciones",
    "How-to guides": "Guías prácticas",
    "Run in a notebook": "Ejecutar en un notebook",
    "Deploy several nodes": "Desplegar varios nodos",
    "Write a middleware": "Escribir un middleware",
    "Authorize private channels": "Autorizar canales privados",
    "Connect a browser": "Conectar un navegador",
    "Measure a broadcast": "Medir una difusión",
    "Run the dashboard in a classroom": "El panel en clase",
    "Topics": "Temas",
    "Architecture and the way of one message": "Arquitectura y el camino de un mensaje",
    "Channels and authorization": "Canales y autorización",
    "Presence and its cost": "Presencia y su coste",
    "Events, priorities and heartbeat": "Eventos, prioridades y heartbeat",
    "Scaling out": "Escalado",
    "Security": "Seguridad",
    "Compression": "Compresión",
    "Metrics": "Métricas",
    "The dashboard": "El panel",
    "Performance": "Rendimiento",
    "WebSocket over HTTP/2": "WebSocket sobre HTTP/2",
    "Reference": "Referencia",
    "API": "API",
    "API guide and CLI": "Guía de la API y CLI",
    "Protocol v1": "Protocolo v1",
    "Binary protocol": "Protocolo binario",
    "Pusher protocol": "Protocolo Pusher",
    "Clients": "Clientes",
}

FENCE = re.compile(r"^\s*(```+|~~~+)")
# [text](target) and ![alt](target), target without spaces; an optional "title".
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _is_spanish(config: MkDocsConfig) -> bool:
    return Path(config.docs_dir).resolve() == ES


def _repo_url(config: MkDocsConfig) -> str:
    return str(config.repo_url).rstrip("/")


def _github_slug(heading: str) -> str:
    return slugify(case="lower")(heading, "-")


def _outside_fences(text: str) -> list[tuple[bool, str]]:
    """The lines of a Markdown text, each marked True when it is inside a code fence."""
    out: list[tuple[bool, str]] = []
    inside, fence = False, ""
    for line in text.splitlines(keepends=True):
        m = FENCE.match(line)
        if not inside and m:
            inside, fence = True, m.group(1)
            out.append((True, line))
        elif inside:
            out.append((True, line))
            if line.strip() == fence:
                inside = False
        else:
            out.append((False, line))
    return out


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for code, line in _outside_fences(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6} (.*)", line)
        if code or not m:
            continue
        slug = _github_slug(m.group(1).strip())
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}_{n}")
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _page_url(src_uri: str) -> str:
    """The URL (directory style, relative to a site's root) of a page's source."""
    stem, _ = posixpath.splitext(src_uri)
    if posixpath.basename(stem) in ("index", "README"):
        return posixpath.dirname(stem) + "/" if posixpath.dirname(stem) else ""
    return stem + "/"


def _relative_url(target: str, page_url: str) -> str:
    """A link from the page at page_url to target (both relative to the same root)."""
    base = page_url.rstrip("/") or "."
    rel = posixpath.relpath(target.rstrip("/") or ".", base)
    return rel + "/" if target.endswith("/") or target == "" else rel


def _translations() -> dict[str, str]:
    """English page (relative to docs/) -> its Spanish translation (relative to docs/es/)."""
    out: dict[str, str] = {}
    for es_page in _spanish_pages():
        first = (ES / es_page).read_text(encoding="utf-8").split("\n", 1)[0]
        m = TRANSLATION_HEADER.match(first)
        if m:
            out[m.group(1)] = es_page
    return out


def _spanish_pages() -> list[str]:
    """The Markdown pages of docs/es/, folders included (howto/, api/), relative to it."""
    return sorted(p.relative_to(ES).as_posix() for p in ES.rglob("*.md"))


def _first_line(path: Path) -> str:
    """The first line of a Markdown file, or of a notebook's first Markdown cell."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = next(("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"), "")
    return text.split("\n", 1)[0]


def _lesson_translations() -> dict[str, str]:
    """English lesson or index (relative to the repository: notebooks/X) -> its Spanish
    translation's place on the Spanish site (notebooks/Y, the file is notebooks/es/Y)."""
    out: dict[str, str] = {}
    for path in [NOTEBOOKS_ES / "README.md", *sorted(NOTEBOOKS_ES.glob("*.ipynb"))]:
        m = LESSON_HEADER.match(_first_line(path)) if path.is_file() else None
        if m:
            out[m.group(1)] = f"notebooks/{path.name}"
    return out


# --- configuration -------------------------------------------------------------------


class _QuietCrossSiteLinks(logging.Filter):
    """Drop MkDocs' note about each link into the other language's site: it cannot know
    that site, and these hooks have checked the target already."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("unrecognized relative link" in message
                    and any(f"'{url}'" in message or f"'{url}#" in message
                            for url in _CROSS_SITE))


_CROSS_SITE: set[str] = set()  # links these hooks made into the other language's site


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.mdx_configs.setdefault("toc", {})["slugify"] = slugify(case="lower")
    pages_log = logging.getLogger("mkdocs.structure.pages")
    if not any(isinstance(f, _QuietCrossSiteLinks) for f in pages_log.filters):
        pages_log.addFilter(_QuietCrossSiteLinks())
    if _is_spanish(config):
        _spanish_nav(config)
    return config


_STUBS: dict[str, tuple[str, str]] = {}  # Spanish site: stub src_uri -> (title, English src)


def _spanish_nav(config: MkDocsConfig) -> None:
    """Replace the inherited English navigation by its Spanish counterpart."""
    translated = {**_translations(), **_lesson_translations()}
    _STUBS.clear()
    used: set[str] = set()

    def convert(item: Any) -> Any:
        if isinstance(item, str):
            return convert({None: item})
        (title, value), = item.items()
        title_es = TITLES_ES.get(title, title) if title else None
        if isinstance(value, list):
            return {title_es: [convert(v) for v in value]}
        if value in translated:
            used.add(translated[value])
            return {title_es: translated[value]} if title_es else translated[value]
        stub = value if value.endswith(".md") else posixpath.splitext(value)[0] + ".md"
        if (ES / stub).exists():
            stub = "en/" + stub
        _STUBS[stub] = (title_es or title or value, value)
        return {title_es or _english_title(value): stub}

    nav = [convert(item) for item in config.nav or []]
    others = [p for p in _spanish_pages() if p not in used]
    if others:
        nav.append({"Otras páginas": others})
    config.nav = nav


def _english_title(src: str) -> str:
    """The first level-1 heading of an English nav entry (a page or a lesson)."""
    path = ROOT / src if src.startswith("notebooks/") else DOCS / src
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for code, line in _outside_fences(text):
        if not code and line.startswith("# "):
            return line[2:].strip()
    return path.stem


# --- files -----------------------------------------------------------------------------


@event_priority(100)  # before mkdocs-jupyter wraps the notebooks
def on_files(files: Files, config: MkDocsConfig) -> Files:
    if _is_spanish(config):
        for src_uri, (title, english) in _STUBS.items():
            files.append(File.generated(config, src_uri, content=_stub(src_uri, title, english)))
        # The Spanish lessons and their index, published at notebooks/ as on the English
        # site (the files stay in notebooks/es/).
        for src_uri in _lesson_translations().values():
            path = NOTEBOOKS_ES / posixpath.basename(src_uri)
            files.append(File.generated(config, src_uri, abs_src_path=str(path)))
        # The English pages' pictures (docs/img/...), which the translations show too.
        for path in sorted(DOCS.rglob("*")):
            if (path.is_file() and not path.is_relative_to(ES) and path.suffix not in (".md", ".py")
                    and files.get_file_from_path(path.relative_to(DOCS).as_posix()) is None):
                files.append(File(path.relative_to(DOCS).as_posix(), str(DOCS), config.site_dir,
                                  config.use_directory_urls))
        return files
    # Real files (not File.generated: mkdocs-jupyter reads a notebook through src_dir),
    # published at notebooks/ as in the repository.
    for path in [NOTEBOOKS / "README.md", *sorted(NOTEBOOKS.glob("*.ipynb"))]:
        files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config.site_dir,
                          config.use_directory_urls))
    return files


def on_nav(nav: Any, config: MkDocsConfig, files: Files) -> Any:
    """Point mkdocs-jupyter's wrapper of each Spanish lesson at its file: the wrapper
    finds a notebook through src_dir, which a lesson kept in notebooks/es/ but published
    at notebooks/ has not."""
    for f in files:
        inner = getattr(f, "file", None)
        if isinstance(inner, File) and inner.abs_src_path and f.abs_src_path is None:
            f.abs_src_path = inner.abs_src_path
    return nav


def _stub(src_uri: str, title: str, english: str) -> str:
    target = _page_url(english)
    url = _relative_url(target, "es/" + _page_url(src_uri))
    _CROSS_SITE.add(url)
    return (f"# {title}\n\nEsta página aún no está traducida al español: "
            f"[léela en inglés]({url}).\n")


# --- links -----------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.abs_src_path is None:  # a generated page: nothing to edit
        page.edit_url = None
        return markdown
    source = Path(page.file.abs_src_path).resolve()
    if not source.is_relative_to(Path(config.docs_dir).resolve()):  # a lesson or its index
        page.edit_url = f"{_repo_url(config)}/edit/{BRANCH}/{source.relative_to(ROOT).as_posix()}"
    if source.suffix == ".ipynb":  # rendered from the notebook by mkdocs-jupyter, not Markdown
        return markdown
    by_path = _files_by_path(files)
    spanish = _is_spanish(config)
    here = ("es/" if spanish else "") + page.url

    def rewrite(m: re.Match[str]) -> str:
        target = m.group(2)
        if SCHEME.match(target) or target.startswith(("#", "/")):
            return m.group(0)
        file_part, _, anchor = target.partition("#")
        real = (source.parent / file_part).resolve()
        new = _site_link(real, anchor, page, by_path, spanish, here, config)
        if new is None:
            log.warning("Doc file '%s' links '%s': no such file in the repository",
                        page.file.src_uri, target)
            return m.group(0)
        return m.group(1) + new + m.group(3)

    out = []
    for code, line in _outside_fences(markdown):
        out.append(line if code else LINK.sub(rewrite, line))
    return "".join(out)


def _files_by_path(files: Files) -> dict[Path, File]:
    """The site's files by their source's real path."""
    return {Path(f.abs_src_path).resolve(): f for f in files
            if f.abs_src_path and not f.inclusion.is_excluded()}


def _lesson_url(real: Path, folder: Path) -> str | None:
    """The URL of a lesson (or of the lessons' index) in `folder`, on its site."""
    if real.parent == folder:
        if real.suffix == ".ipynb":
            return f"notebooks/{real.stem}/"
        if real.name == "README.md":
            return "notebooks/"
    return None


def _english_url(real: Path) -> str | None:
    """The URL of a repository file on the English site, if that site publishes it."""
    lesson = _lesson_url(real, NOTEBOOKS)
    if lesson is not None:
        return lesson
    if real.is_relative_to(DOCS) and not real.is_relative_to(ES) and real.suffix != ".py":
        rel = real.relative_to(DOCS).as_posix()
        return _page_url(rel) if real.suffix == ".md" else rel
    return None


def _spanish_url(real: Path) -> str | None:
    """The URL of a repository file on the Spanish site (under es/), if it is there."""
    lesson = _lesson_url(real, NOTEBOOKS_ES)
    if lesson is not None and real.is_file():
        return "es/" + lesson
    if real.is_relative_to(ES):
        rel = real.relative_to(ES).as_posix()
        return "es/" + (_page_url(rel) if real.suffix == ".md" else rel)
    return None


def _site_link(real: Path, anchor: str, page: Page, by_path: dict[Path, File], spanish: bool,
               here: str, config: MkDocsConfig) -> str | None:
    """Where a link to the repository file `real` goes on this site."""
    suffix = "#" + anchor if anchor else ""
    if real in by_path:  # a file of this site: a relative link MkDocs checks itself
        src = by_path[real].src_uri
        return posixpath.relpath(src, posixpath.dirname(page.file.src_uri) or ".") + suffix
    if not real.exists():
        return None
    other = _english_url(real) if spanish else _spanish_url(real)
    if other is not None and not real.is_dir():  # the other language's site
        if anchor and real.suffix == ".md" and anchor not in _anchors(real):
            log.warning("Doc file '%s' links '%s#%s': no such heading there",
                        page.file.src_uri, real.relative_to(ROOT), anchor)
        url = _relative_url(other, here)
        _CROSS_SITE.add(url)
        return url + suffix
    kind = "tree" if real.is_dir() else "blob"
    return f"{_repo_url(config)}/{kind}/{BRANCH}/{real.relative_to(ROOT).as_posix()}{suffix}"


# --- lessons ---------------------------------------------------------------------------

HTML_LINK = re.compile(r'(<a\s[^>]*?href=")([^"]+)(")')


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """A lesson's page (HTML from mkdocs-jupyter): its links to Markdown files and notebooks
    of the repository (a translation's header, a lesson's link to another) go where
    on_page_markdown sends a page's links; a link to such a file that is not there warns."""
    if page.file.abs_src_path is None or not page.file.abs_src_path.endswith(".ipynb"):
        return html
    source = Path(page.file.abs_src_path).resolve()
    by_path = _files_by_path(files)
    spanish = _is_spanish(config)
    here = ("es/" if spanish else "") + page.url

    def rewrite(m: re.Match[str]) -> str:
        target = m.group(2)
        file_part, _, anchor = target.partition("#")
        if (SCHEME.match(target) or target.startswith(("#", "/"))
                or posixpath.splitext(file_part)[1] not in (".md", ".ipynb")):
            return m.group(0)
        real = (source.parent / file_part).resolve()
        if real in by_path:  # a page of this site
            new = _relative_url(by_path[real].url, page.url) + ("#" + anchor if anchor else "")
        else:
            found = _site_link(real, anchor, page, by_path, spanish, here, config)
            if found is None:
                log.warning("Doc file '%s' links '%s': no such file in the repository",
                            page.file.src_uri, target)
                return m.group(0)
            new = found
        return m.group(1) + new + m.group(3)

    return HTML_LINK.sub(rewrite, html)

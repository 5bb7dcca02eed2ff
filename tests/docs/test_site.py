"""The documentation site (mkdocs.yml, mkdocs.es.yml) and its API reference.

Both languages build with ``mkdocs build --strict`` as ``make docs`` builds them (a
broken link, a missing page or an unresolved reference fails the build), every link
of the built HTML resolves, the lessons are rendered from their stored outputs, and
every public symbol has a docstring and an entry in the generated reference.

The public API is what a user imports: the names in ``__all__`` of PUBLIC_MODULES
(for a module without ``__all__``, the classes and functions it defines whose names
do not start with ``_``).
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]

PUBLIC_MODULES = (
    "realtime_lab",
    "realtime_lab.core",
    "realtime_lab.client",
    "realtime_lab.broker",
    "realtime_lab.protocol",
    "realtime_lab.middleware",
    "realtime_lab.instrument",
    "realtime_lab.plot",
    "realtime_lab.widgets",
    "realtime_lab.inspection",
    "realtime_lab.testing",
    "realtime_lab.transports",
    "realtime_lab.pusher",
    "realtime_lab.errors",
)

# Building both sites takes about 16 s of CPU; on a busy two-core machine that can be
# a minute or two of wall time, counted in the first test that uses the fixture.
pytestmark = pytest.mark.timeout(900)

INSTALL_HINT = "install the docs extra: pip install -e '.[docs]' (make install-test does)"


def public_names(module: ModuleType) -> list[str]:
    """The module's ``__all__``, or the classes and functions it defines."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    )


PUBLIC = [(m, n) for m in PUBLIC_MODULES for n in public_names(importlib.import_module(m))]


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: {INSTALL_HINT}")


def _mkdocs_build(config: str, site_dir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=420,
    )
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both languages built as `make docs` builds them: English, then Spanish into es/."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        _require(module)
    out = tmp_path_factory.mktemp("docs") / "site"
    for config, dest in (("mkdocs.yml", out), ("mkdocs.es.yml", out / "es")):
        done, seconds = _mkdocs_build(config, dest)
        log = (done.stdout + done.stderr)[-6000:]
        assert done.returncode == 0, f"mkdocs build --strict -f {config} failed:\n{log}"
        print(f"{config}: built in {seconds:.1f} s")
    return out


def test_both_languages_build_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "es" / "index.html").is_file()
    assert (site / "objects.inv").is_file()


HREF = re.compile(r'(?:href|src)="([^"]*)"')
REPO_FILE = re.compile(r"^https://github\.com/realtime-lab/realtime_lab/(?:blob|tree|edit|raw)/main/"
                       r"([^#?]+)")
IDS = re.compile(r'id="([^"]+)"')


def test_every_link_of_the_built_sites_resolves(site: Path) -> None:
    """Relative links of every page, across both languages, reach a file (and an id),
    and links to files of the repository (edit buttons, files outside docs/) name files
    that exist.

    404.html is left out: MkDocs writes it with links from the server's root, since it
    is served for any missing path.
    """
    ids: dict[Path, set[str]] = {}

    def ids_of(path: Path) -> set[str]:
        if path not in ids:
            ids[path] = set(IDS.findall(path.read_text(encoding="utf-8")))
        return ids[path]

    broken: list[str] = []
    for page in sorted(p for p in site.rglob("*.html") if p.name != "404.html"):
        for raw in HREF.findall(page.read_text(encoding="utf-8")):
            link = html.unescape(raw)
            repo_file = REPO_FILE.match(link)
            if repo_file:  # a link to a file of this repository: it must exist here
                if not (ROOT / repo_file.group(1)).exists():
                    broken.append(f"{page.relative_to(site)}: {link}")
                continue
            if not link or re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
                continue
            target, _, anchor = link.partition("#")
            dest = (page.parent / target).resolve() if target else page
            if dest.is_dir():
                dest = dest / "index.html"
            where = f"{page.relative_to(site)}: {link}"
            if not dest.exists():
                broken.append(where)
            elif anchor and dest.suffix == ".html" and anchor not in ids_of(dest):
                broken.append(where + " (no such id)")
    assert not broken, "broken links in the built site:\n" + "\n".join(broken[:50])


def test_language_switch_links_both_sites(site: Path) -> None:
    english = (site / "index.html").read_text(encoding="utf-8")
    spanish = (site / "es" / "index.html").read_text(encoding="utf-8")
    assert 'hreflang="es"' in english and 'href="es/"' in english
    assert 'hreflang="en"' in spanish and 'href="../"' in spanish


def test_spanish_navigation_uses_every_translation(site: Path) -> None:
    """Each page of docs/es/ is in the Spanish site; untranslated pages link the English."""
    spanish_index = (site / "es" / "index.html").read_text(encoding="utf-8")
    es = ROOT / "docs" / "es"
    for page in sorted(es.rglob("*.md")):
        if page == es / "index.md":
            continue
        rel = page.relative_to(es).with_suffix("").as_posix()
        url = rel.removesuffix("index")  # api/index.md is api/
        assert f'href="{url}/"'.replace("//", "/") in spanish_index, (
            f"docs/es/{rel}.md is not in the nav")
    for lesson in sorted((ROOT / "notebooks" / "es").glob("*.ipynb")):
        assert f'href="notebooks/{lesson.stem}/"' in spanish_index, f"{lesson.name} not in the nav"
    assert 'href="notebooks/"' in spanish_index  # the Spanish index of the lessons
    # docs/es/arquitectura.md, the last page to be translated, took its stub's place
    assert 'href="arquitectura/"' in spanish_index
    assert not (site / "es" / "architecture").exists()
    stubs = [p for p in (site / "es").rglob("index.html")
             if "aún no está traducida" in p.read_text(encoding="utf-8")]
    for stub in stubs:  # each links its English page, on the English site
        english = stub.parent.relative_to(site / "es").as_posix()
        depth = "../" * (english.count("/") + 2)
        assert f'href="{depth}{english}/"' in stub.read_text(encoding="utf-8"), stub


def test_an_untranslated_page_gets_a_stub_linking_the_english() -> None:
    """Every English page has a translation today, so the Spanish site shows no stub;
    a page added without one gets a Spanish nav entry whose page links the English."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec and spec.loader
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    config = SimpleNamespace(nav=[{"Topics": [
        {"Architecture and the way of one message": "architecture.md"},
        {"Some new topic": "new-topic.md"}]}])
    hooks._spanish_nav(config)
    assert config.nav[0] == {"Temas": [
        {"Arquitectura y el camino de un mensaje": "arquitectura.md"},
        {"Some new topic": "new-topic.md"}]}
    assert hooks._STUBS == {"new-topic.md": ("Some new topic", "new-topic.md")}
    stub = hooks._stub("new-topic.md", "Some new topic", "new-topic.md")
    assert "aún no está traducida" in stub and "(../../new-topic/)" in stub


LESSONS = [("", p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))] + [
    ("es", p) for p in sorted((ROOT / "notebooks" / "es").glob("*.ipynb"))]


@pytest.mark.parametrize(("language", "path"), LESSONS,
                         ids=[p.relative_to(ROOT).as_posix() for _, p in LESSONS])
def test_lessons_are_rendered_from_their_stored_outputs(site: Path, language: str,
                                                        path: Path) -> None:
    """A lesson's page (the English ones on the English site, the Spanish ones of
    notebooks/es/ at notebooks/ of the Spanish site) shows the outputs stored in the
    notebook (it is not executed)."""
    notebook = path.name
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    texts = [
        "".join(out["text"]).strip().splitlines()[0]
        for cell in cells if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and "".join(out["text"]).strip()
    ]
    assert texts, f"{notebook} has no stored stream output to look for"
    page = (site / language / "notebooks" / path.stem / "index.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    missing = [t for t in texts if t.strip() not in text]
    assert not missing, f"stored outputs of {notebook} not on its page: {missing[:3]}"


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_symbol_has_a_docstring(module: str, name: str) -> None:
    """What the reference shows: the docstring Griffe finds (attributes included)."""
    _require("griffe")
    doc = _griffe_object(module, name).docstring
    assert doc is not None and doc.value.strip(), (
        f"{module}.{name} has no docstring: add one (a string literal after a constant)"
    )


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_symbol_has_a_reference_entry(site: Path, module: str, name: str) -> None:
    assert f"{module}.{name}" in _inventory(site), (
        f"{module}.{name} is not in the API reference: give it a docstring, and give "
        f"{module} a page under docs/api/ (`::: {module}`) in mkdocs.yml's nav"
    )


def test_spanish_api_pages_render_the_same_reference(site: Path) -> None:
    """docs/es/api/ renders the docstrings (in English) as the English pages do."""
    missing = [f"{m}.{n}" for m, n in PUBLIC if f"{m}.{n}" not in _inventory(site / "es")]
    assert not missing, f"not in the Spanish site's API reference: {missing[:10]}"
    page = (site / "es" / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert "docstrings están en inglés" in page and 'id="realtime_lab.core.Hub"' in page


_GRIFFE: dict[str, object] = {}
_INVENTORIES: dict[Path, set[str]] = {}


def _griffe_object(module: str, name: str):  # noqa: ANN202 (griffe is a docs dependency)
    import griffe

    if "package" not in _GRIFFE:
        _GRIFFE["package"] = griffe.load("realtime_lab", search_paths=[str(ROOT)],
                                         resolve_aliases=True, resolve_external=False)
    package = _GRIFFE["package"]
    owner = package if module == "realtime_lab" else package[module.removeprefix("realtime_lab.")]
    obj = owner[name]
    return obj.final_target if obj.is_alias else obj


def _inventory(site: Path) -> set[str]:
    if site not in _INVENTORIES:
        from mkdocstrings import Inventory

        with (site / "objects.inv").open("rb") as fh:
            _INVENTORIES[site] = set(Inventory.parse_sphinx(fh))
    return _INVENTORIES[site]


def test_the_api_guide_lists_every_server_option() -> None:
    """docs/reference.md promises every ServerOptions field with its default."""
    import dataclasses

    from realtime_lab import ServerOptions

    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    section = text[text.index("## `ServerOptions`"):text.index("## `connect` and `Client`")]
    missing = [f.name for f in dataclasses.fields(ServerOptions)
               if not f.name.startswith("_") and f"`{f.name}`" not in section]
    assert not missing, f"docs/reference.md, ServerOptions: no row for {missing}"

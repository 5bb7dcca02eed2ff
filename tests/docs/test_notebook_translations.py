"""The Spanish lessons in notebooks/es/ against their English originals in notebooks/.

The rule of the Markdown pages (tests/docs/test_translations.py), for notebooks: each
Spanish lesson's first Markdown cell opens with a line naming its English original and
the commit it translates, and that commit is in this branch's history. Beyond it:

* the English original is the same at HEAD as at the named commit (for a lesson: the
  text and code of its cells, not their outputs), so a change of the English lesson or
  index fails here until the translation follows it and names the new commit;
* the Spanish lesson has the same cells (ids, kinds, nbval tags) and its code cells are
  the English ones token for token, comments and the text of string literals aside
  (the placeholders of f-strings must match too);
* the inline code spans of each Markdown cell are kept;
* it is stored executed, with outputs (mkdocs-jupyter renders them; `make test` runs
  it again under nbval).

notebooks/es/README.md, the Spanish index, follows the Markdown rule (header, sections,
inline code, code blocks with the lessons' Spanish names and folder).
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import tokenize
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ES = NOTEBOOKS / "es"

# Spanish lesson -> English original.
LESSONS = {
    "01_inicio_rapido.ipynb": "01_quickstart.ipynb",
    "02_canales_y_presencia.ipynb": "02_channels_and_presence.ipynb",
    "03_experimento_de_difusion.ipynb": "03_broadcast_fanout_experiment.ipynb",
    "04_reconexion_y_heartbeat.ipynb": "04_reconnect_and_heartbeat.ipynb",
    "05_seguridad_y_limites.ipynb": "05_security_and_limits.ipynb",
    "06_dos_nodos.ipynb": "06_two_nodes.ipynb",
    "07_binario_y_compresion.ipynb": "07_binary_and_compression.ipynb",
    "08_grupos_grandes.ipynb": "08_large_groups.ipynb",
}
PAIRS = {"README.md": "README.md", **LESSONS}

HEADER = re.compile(
    r"^> Traducción de \[notebooks/([\w.-]+)\]\(\.\./([\w.-]+)\) en `([0-9a-f]{7,40})`\.$"
)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
TAGS = ("nbval-ignore-output", "nbval-check-output", "nbval-skip", "nbval-raises-exception")


def _page_rules():  # noqa: ANN202 (a module)
    """tests/docs/test_translations.py, whose Markdown helpers these tests share (the
    tests are not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "_translation_rules", Path(__file__).with_name("test_translations.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RULES = _page_rules()
prose, inline_code, code_blocks = _RULES.prose, _RULES.inline_code, _RULES.code_blocks


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def first_line(path: Path) -> str:
    if path.suffix == ".ipynb":
        text = next(source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    return text.split("\n", 1)[0]


def git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """A git command in the repository, or None without git or in a shallow clone."""
    exe = shutil.which("git")
    if not exe or not (ROOT / ".git").exists():
        return None
    shallow = subprocess.run([exe, "rev-parse", "--is-shallow-repository"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    if shallow != "false":
        return None
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def code_shape(code: str) -> list[tuple[int, str]]:
    """The tokens of a code cell without comments, blank lines and the text of string
    literals; an f-string keeps its placeholders. IPython magics (%matplotlib) and
    top-level await tokenize as plain Python."""
    out: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL):
            continue
        if tok.type == tokenize.STRING:
            prefix = re.match(r"^[A-Za-z]*", tok.string).group(0).lower()  # type: ignore[union-attr]
            fields = re.findall(r"(?<!\{)\{([^{}]*)\}", tok.string) if "f" in prefix else []
            fields = [QUOTED.sub("''", field) for field in fields]  # b['...'] inside one
            out.append((tok.type, prefix + "|" + "|".join(fields)))
        else:
            out.append((tok.type, tok.string))
    return out


def tags(cell: dict[str, Any]) -> list[str]:
    return sorted(t for t in cell.get("metadata", {}).get("tags", []) if t in TAGS)


def test_every_english_lesson_has_a_spanish_one() -> None:
    english = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    spanish = {p.name for p in ES.glob("*.ipynb")}
    assert english == set(LESSONS.values()), "a lesson without a Spanish version: add it here"
    assert spanish == set(LESSONS), f"notebooks/es/ has {sorted(spanish - set(LESSONS))}"
    assert (ES / "README.md").is_file()


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_header_names_the_original_and_a_commit_of_this_branch(es: str, en: str) -> None:
    m = HEADER.match(first_line(ES / es))
    expected = f"> Traducción de [notebooks/{en}](../{en}) en `<commit>`."
    assert m, f"notebooks/es/{es}: the first line (of the first Markdown cell) must be {expected!r}"
    assert m.group(1) == en and m.group(2) == en, f"notebooks/es/{es} must name notebooks/{en}"
    found = git("merge-base", "--is-ancestor", m.group(3), "HEAD")
    if found is not None:
        assert found.returncode == 0, (
            f"notebooks/es/{es}: commit {m.group(3)} is not in this branch's history (rebased? "
            f"name `git log -1 --format=%h -- notebooks/{en}`)")


@pytest.mark.parametrize("es,en", sorted(PAIRS.items()))
def test_english_original_unchanged_since_the_named_commit(es: str, en: str) -> None:
    """For a lesson, the text and code of its cells, not its outputs: re-recording a
    lesson is no change."""
    m = HEADER.match(first_line(ES / es))
    assert m
    then = git("show", f"{m.group(3)}:notebooks/{en}")
    if then is None:
        pytest.skip("needs git and a full clone")
    assert then.returncode == 0, then.stderr
    now = (NOTEBOOKS / en).read_text(encoding="utf-8")
    if en.endswith(".ipynb"):
        def cells(text: str) -> list[tuple[str, str]]:
            return [(c["cell_type"], source(c)) for c in json.loads(text)["cells"]]

        old_cells, new_cells = cells(then.stdout), cells(now)
        changed = [i for i, (a, b) in enumerate(zip(old_cells, new_cells, strict=False))
                   if a != b]
        same = len(old_cells) == len(new_cells) and not changed
        what = f" (cells {changed})"
    else:
        same, what = then.stdout == now, ""
    assert same, (
        f"notebooks/{en} changed since {m.group(3)}{what}: update notebooks/es/{es} (and "
        "execute a lesson again), then name the new commit in its first line")


@pytest.mark.parametrize("es,en", sorted(LESSONS.items()))
def test_same_cells_and_the_same_code(es: str, en: str) -> None:
    english, spanish = load(NOTEBOOKS / en), load(ES / es)
    assert spanish["metadata"].get("kernelspec") == english["metadata"].get("kernelspec")
    a, b = english["cells"], spanish["cells"]
    def layout(cells: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
        return [(c.get("id"), c["cell_type"]) for c in cells]

    assert layout(b) == layout(a), f"notebooks/es/{es} and notebooks/{en} have different cells"

    for ca, cb in zip(a, b, strict=True):
        where = f"notebooks/es/{es}, cell {cb.get('id')}"
        assert tags(cb) == tags(ca), f"{where}: nbval tags differ from the English lesson"
        if ca["cell_type"] == "code":
            assert code_shape(source(cb)) == code_shape(source(ca)), (
                f"{where}: the code differs from notebooks/{en} (beyond comments and the text "
                f"of strings):\n{source(ca)}\n---\n{source(cb)}")
        else:
            missing = inline_code(source(ca)) - inline_code(source(cb))
            assert not missing, f"{where} lacks the English cell's code spans {sorted(missing)}"


@pytest.mark.parametrize("es,en", sorted(LESSONS.items()))
def test_stored_executed_with_outputs(es: str, en: str) -> None:
    english, spanish = load(NOTEBOOKS / en), load(ES / es)
    for ca, cb in zip(english["cells"], spanish["cells"], strict=True):
        if cb["cell_type"] != "code":
            continue
        where = f"notebooks/es/{es}, cell {cb.get('id')}"
        assert cb.get("execution_count") is not None, f"{where} was not executed"
        kinds = {o["output_type"] for o in cb.get("outputs", [])}
        assert bool(kinds) == bool(ca.get("outputs")), f"{where}: outputs differ in presence"
        assert "error" not in kinds, f"{where} stored an error"
    counts = [c["execution_count"] for c in spanish["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"notebooks/es/{es}: run top to bottom in one kernel (execution counts {counts})")


def readme_blocks_in_spanish(block: str) -> str:
    """An English code block of notebooks/README.md as the Spanish index shows it."""
    for es, en in LESSONS.items():
        block = block.replace(en, es)
    return block.replace("cd notebooks\n", "cd notebooks/es\n").replace("../.venv", "../../.venv")


def test_index_follows_the_english_one() -> None:
    en = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    es = (ES / "README.md").read_text(encoding="utf-8")

    def levels(text: str) -> list[int]:
        return [len(h) - len(h.lstrip("#")) for h in _RULES.headings(text)]

    assert levels(es) == levels(en), "notebooks/es/README.md has other sections"
    missing = inline_code(en) - inline_code(es)
    assert not missing, f"notebooks/es/README.md lacks the code spans {sorted(missing)}"
    assert code_blocks(es) == [readme_blocks_in_spanish(b) for b in code_blocks(en)]
    for es_name in LESSONS:
        assert f"]({es_name})" in es, f"notebooks/es/README.md does not link {es_name}"
    for target in re.findall(r"\[[^\]]*\]\(([^)\s#]+)", prose(es)):
        if not re.match(r"^[a-z]+:", target):
            assert (ES / target).resolve().exists(), f"notebooks/es/README.md: broken {target}"

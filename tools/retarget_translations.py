"""Point the Spanish pages' headers at commits of this branch (after a cherry-pick or rebase).

Each page in docs/es/ and notebooks/es/ opens with "> Traducción de [...](...) en `<commit>`.".
A cherry-pick gives the English commit a new hash, so the header names a commit that is not
in HEAD's history. For each such header this finds the commit of HEAD's history with the
same subject (the cherry-picked twin), or else the last commit that changed the English
original, and rewrites the header. Run from the repository: python tools/retarget_translations.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HEADER = re.compile(
    r"^> Traducción de \[(?:docs|notebooks)/([^\]]+)\]\(([^)]+)\) en `([0-9a-f]{7,40})`\.")


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def in_history(commit: str) -> bool:
    return git("merge-base", "--is-ancestor", commit, "HEAD").returncode == 0


def twin(commit: str, english: str) -> str:
    subject = git("show", "-s", "--format=%s", commit).stdout.strip()
    if subject:
        for line in git("log", "--format=%h %s", "HEAD", "--", english).stdout.splitlines():
            short, _, rest = line.partition(" ")
            if rest == subject:
                return short
    return git("log", "-1", "--format=%h", "HEAD", "--", english).stdout.strip()


def fix(first: str, english_dir: str) -> str | None:
    m = HEADER.match(first)
    if not m or in_history(m.group(3)):
        return None
    new = twin(m.group(3), f"{english_dir}/{m.group(1)}")
    return first.replace(f"`{m.group(3)}`", f"`{new}`", 1) if new else None


def main() -> int:
    changed = []
    pages = [(p, "docs") for p in sorted(Path("docs/es").rglob("*.md"))]
    pages += [(p, "notebooks") for p in sorted(Path("notebooks/es").glob("*.md"))]
    for page, english_dir in pages:
        lines = page.read_text().split("\n")
        new = fix(lines[0], english_dir)
        if new:
            page.write_text("\n".join([new, *lines[1:]]))
            changed.append(str(page))
    for book in sorted(Path("notebooks/es").glob("*.ipynb")):
        raw = book.read_text()
        cells = json.loads(raw)["cells"]
        if not cells or not cells[0]["source"]:
            continue
        source = cells[0]["source"]
        first = source[0] if isinstance(source, list) else source.split("\n")[0]
        new = fix(first.rstrip("\n"), "notebooks")
        if new:
            raw = raw.replace(first.rstrip("\n"), new, 1)
            book.write_text(raw)
            changed.append(str(book))
    for path in changed:
        print("retargeted", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The package as an index would show it, and as a user installs it.

The README's images are absolute links derived from the project URL (a relative
image breaks on a package page); the sdist and the wheel build with
``python -m build`` (the wheel from the sdist, as an installer would) and install
into a bare virtual environment where the command line, the import and the
static files work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

import realtime_lab

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
STATIC = sorted(p.name for p in (ROOT / "realtime_lab" / "static").iterdir() if p.is_file())

MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")
HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)", re.IGNORECASE)


def readme_images() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return MD_IMAGE.findall(text) + HTML_IMAGE.findall(text)


def test_readme_images_are_absolute_links_derived_from_the_project_url() -> None:
    base = PROJECT["urls"]["Repository"].rstrip("/") + "/raw/main/"
    images = readme_images()
    assert images, "the README has no image"
    for link in images:
        assert link.startswith(base), f"README image {link!r} is not under {base}"
        path = ROOT / link[len(base):]
        assert path.is_file(), f"README image {link!r}: no {path.relative_to(ROOT)} here"


def test_readme_spanish_section_links_the_spanish_docs_absolutely() -> None:
    """The README's Spanish section points to the Spanish docs with absolute links (a
    relative one breaks on a package page), each to a file that exists."""
    text = (ROOT / "README.md").read_text()
    assert "\n## En español\n" in text, "the README has no '## En español' section"
    section = text.split("\n## En español\n", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(([^)\s]+)\)", section)
    base = PROJECT["urls"]["Repository"].rstrip("/") + "/blob/main/"
    assert any(link.endswith("docs/es/index.md") for link in links), links
    for link in links:
        assert link.startswith(base), f"README, En español: {link!r} is not under {base}"
        assert (ROOT / link[len(base):]).is_file(), f"README, En español: no file for {link!r}"


def test_every_readme_link_into_the_repository_is_absolute() -> None:
    """A relative link works on the repository's page but breaks on a package page
    (PyPI shows the README as the long description): every link of the README that
    points into the repository is absolute, under the project URL, to a file or a
    folder that exists here."""
    text = (ROOT / "README.md").read_text()
    repository = PROJECT["urls"]["Repository"].rstrip("/") + "/"
    links = [link for link in re.findall(r"\]\(\s*<?([^)\s>]+)", text)
             if not link.startswith("#")]
    assert links, "the README has no link"
    for link in links:
        assert re.match(r"[a-z]+:", link), f"README link {link!r} is relative"
        if not link.startswith(repository):
            continue  # a link to another site
        kind, _, rest = link[len(repository):].partition("/main/")
        assert kind in {"blob", "tree", "raw"}, f"README link {link!r}: not blob|tree|raw/main"
        path = ROOT / rest.split("#", 1)[0]
        assert path.exists(), f"README link {link!r}: no {path.relative_to(ROOT)} here"
        assert path.is_dir() == (kind == "tree"), f"README link {link!r}: tree/ is for folders"


def test_metadata_for_an_index() -> None:
    assert {"Homepage", "Repository", "Documentation", "Issues"} <= set(PROJECT["urls"])
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert f"Programming Language :: Python :: {sys.version_info.major}." \
           f"{sys.version_info.minor}" in classifiers
    assert (ROOT / "realtime_lab" / "py.typed").is_file()
    assert "prometheus" in PROJECT["optional-dependencies"]


def test_version_comes_from_the_metadata() -> None:
    from importlib.metadata import version

    assert realtime_lab.__version__ == version("realtime_lab") == PROJECT["version"]


def test_version_falls_back_to_pyproject_in_a_source_checkout(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError

    from realtime_lab import _version

    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(_version, "version", not_installed)
    assert _version.read_version() == PROJECT["version"]  # this checkout's pyproject.toml
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "something_else"\nversion = "9.9"\n')
    assert _version.read_version(other) == "0+unknown"
    assert _version.read_version(tmp_path / "missing.toml") == "0+unknown"


def copy_source(dest: Path) -> Path:
    """What an sdist is built from: pyproject, README, LICENSE and the package."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "realtime_lab", dest / "realtime_lab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def run(*cmd: str | Path, timeout: float = 120, **kwargs: object) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sdist_and_wheel_build_and_install_into_a_bare_venv(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, src, timeout=300)
    version = PROJECT["version"]
    wheel = dist / f"realtime_lab-{version}-py3-none-any.whl"
    sdist = dist / f"realtime_lab-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"realtime_lab-{version}.dist-info/METADATA").decode()
    assert "realtime_lab/py.typed" in names
    assert {f"realtime_lab/static/{n}" for n in STATIC} <= names
    assert "Classifier: Typing :: Typed" in metadata
    assert "Project-URL: Repository, " + PROJECT["urls"]["Repository"] in metadata
    assert "Provides-Extra: prometheus" in metadata
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "LICENSE", "realtime_lab/py.typed",
            "realtime_lab/static/realtime-lab.js"} <= members

    # a venv with nothing in it (not even pip: this pip installs into it), then the
    # wheel and its one dependency, tornado
    env_dir = tmp_path / "bare"
    venv.create(env_dir, with_pip=False, clear=True)
    py = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    run(sys.executable, "-m", "pip", "--python", py, "install", "--quiet", wheel,
        timeout=300, env=clean_env)
    site = next(env_dir.glob("lib/python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert installed == {"realtime_lab", "tornado"}, installed

    out = run(env_dir / "bin" / "realtime-lab", "--version", env=clean_env)
    assert out.startswith(f"realtime-lab {version} (tornado ")
    out = run(py, "-c", "import sys, realtime_lab; print(realtime_lab.__version__, "
              "realtime_lab.__file__, 'pandas' in sys.modules)", cwd=tmp_path, env=clean_env)
    got_version, where, pandas_loaded = out.split()
    assert got_version == version
    assert Path(where).is_relative_to(env_dir), f"imported from {where}, not the bare venv"
    assert pandas_loaded == "False"

    # the installed server serves its static files (package data) and stops on SIGTERM
    proc = subprocess.Popen([env_dir / "bin" / "realtime-lab", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=clean_env)
    try:
        assert proc.stdout is not None
        match = re.search(r"\(HTTP (http://[\d.:]+)\)", proc.stdout.readline())
        assert match, proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(match.group(1) + "/static/realtime-lab.js",
                                    timeout=10) as resp:
            assert resp.status == 200 and b"WebSocket" in resp.read()
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
